"""DINOv2 centering across 2 processes (gloo) equals 1 process on the concatenated batch.

Real ``torch.distributed`` all-reduces between two spawned CPU processes; nothing is mocked. The iBOT case gives
the ranks different numbers of masked patches (3 and 5), as happens in training.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pathfm.training.losses.dino_v2 import DINOv2CLSLoss
from pathfm.training.losses.ibot import IBOTPatchLoss
from pathfm.training.losses.sinkhorn import sinkhorn_knopp
from tests.training.dinov2_inputs import wave

K, TEMP = 7, 0.05


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher CLS logits (2 crops x 4 images, crop-major) and 8 masked-patch logits."""
    return wave(8, K, 0.3, 0.2), wave(8, K, 0.7, 0.2)


def _rank_rows(cls: torch.Tensor, rank: int) -> torch.Tensor:
    """This rank's half of the batch for each crop (images 2r, 2r + 1 of crop 0 and of crop 1)."""
    return torch.cat([crop[2 * rank : 2 * rank + 2] for crop in cls.chunk(2)])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        cls, patches = _inputs()
        mine = _rank_rows(cls, rank)
        loss = DINOv2CLSLoss(K)
        targets = loss.teacher_targets(mine, TEMP, "sinkhorn_knopp")
        loss.update_center(mine)
        own_patches = patches[:3] if rank == 0 else patches[3:]
        ibot = IBOTPatchLoss(K)
        ibot_targets = ibot.teacher_targets(own_patches, TEMP, "sinkhorn_knopp")
        torch.save(
            {"world": dist.get_world_size(), "cls": targets, "center": loss.center, "ibot": ibot_targets},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ~25 s on 2 shared cores (two spawned interpreters importing torch): slow suite
@pytest.mark.slow
def test_two_processes_equal_one_process_on_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    cls, patches = _inputs()
    single = sinkhorn_knopp(cls, TEMP)
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["cls"], _rank_rows(single, rank), rtol=0, atol=1e-6)
    reference = DINOv2CLSLoss(K)
    reference.update_center(cls)
    for result in ranks:
        torch.testing.assert_close(result["center"], reference.center, rtol=0, atol=1e-7)
    single_patches = sinkhorn_knopp(patches, TEMP)
    torch.testing.assert_close(torch.cat([r["ibot"] for r in ranks]), single_patches, rtol=0, atol=1e-6)
