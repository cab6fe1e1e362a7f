"""The checkpoint layout owned by training/checkpointing.py: save, resume, and export from any checkpoint."""

import json

import pytest
import torch
from accelerate import Accelerator

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.checkpointing import (
    REGISTERED,
    TrainState,
    checkpoint_dirs,
    load_checkpoint,
    register,
    save_checkpoint,
    teacher_file,
)
from pathfm.training.export import load_teacher_from_checkpoint
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.losses.dino import DINOLoss
from tests.training.conftest import reset_accelerate_state


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


class _Stream:
    def __init__(self, position: int) -> None:
        self.position = position

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def _wrapper(seed: int) -> MultiCropWrapper:
    torch.manual_seed(seed)
    config = PathFMViTConfig.from_preset("tiny", drop_path_rate=0.0)
    return MultiCropWrapper(PathFMViTModel(config), DINOHead(64, 32, hidden_dim=16, bottleneck_dim=8))


def test_save_resume_and_export_whatever_the_keyword_order(tmp_path):
    teacher, loss, state = _wrapper(1), DINOLoss(32, 4), TrainState()
    loss.center.fill_(0.25)
    state.step, state.tiles_seen = 5, 40
    accelerator = Accelerator(cpu=True)
    register(accelerator, state=state, loss=loss, teacher=teacher)  # order of the keywords does not matter
    assert teacher_file() == f"custom_checkpoint_{REGISTERED.index('teacher')}.pkl"
    ckpt = save_checkpoint(accelerator, tmp_path, state, _Stream(9), 0, teacher.backbone.config.to_dict(), {})
    assert checkpoint_dirs(tmp_path) == [ckpt] and ckpt.name == "checkpoint-5"
    assert json.loads((ckpt / "pathfm_checkpoint.json").read_text())["teacher"]["file"] == teacher_file()

    exported, _ = load_teacher_from_checkpoint(ckpt)
    for name, value in teacher.backbone.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], value, rtol=0, atol=0)

    # a fresh process state restores teacher, center, position and the stream
    reset_accelerate_state()
    teacher2, loss2, state2, stream2 = _wrapper(2), DINOLoss(32, 4), TrainState(), _Stream(0)
    accelerator2 = Accelerator(cpu=True)
    register(accelerator2, teacher=teacher2, loss=loss2, state=state2)
    assert load_checkpoint(accelerator2, "latest", tmp_path, stream2) == ckpt
    assert (state2.step, state2.tiles_seen, stream2.position) == (5, 40, 9)
    torch.testing.assert_close(loss2.center, loss.center)
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(teacher2.state_dict()[name], value, rtol=0, atol=0)


def test_register_refuses_unknown_objects():
    with pytest.raises(ValueError, match="expected objects"):
        register(Accelerator(cpu=True), teacher=torch.nn.Linear(1, 1))
