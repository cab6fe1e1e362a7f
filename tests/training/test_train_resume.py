"""Resuming with the settings of the checkpoint (``training/resume_check.py``), and a run folder whose run
stopped before its first checkpoint (``checkpointing.prepare_output_dir`` / ``resolve_checkpoint``).

The runs are the tiny in-process runs of ``test_train_loop`` (one real slide, 32/16 px crops)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from pathfm.training import dino
from pathfm.training.interrupt import StopFlag
from pathfm.training.resume_check import FREE_FLAGS, resume_differences, saved_config_path
from tests.training.conftest import reset_accelerate_state
from tests.training.test_train_loop import _args, _run

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _config(**changes: object) -> dict:
    """A saved-config layout with a few fields of each group; ``changes`` as ``group__field=value``."""
    config = {
        "model": {"backbone_preset": "tiny", "out_dim": 64},
        "data": {"mpps": [0.5, 1.0], "num_workers": 0, "reader_threads": 1},
        "training": {"max_steps": 4, "lr": 0.001, "logging_steps": 1, "output_dir": "a", "hub_token": None},
        "run": {"world_size": 2, "mixed_precision": "no", "device": "cpu"},
    }
    for key, value in changes.items():
        group, name = key.split("__")
        config[group][name] = value
    return config


def test_differences_name_each_setting_that_changes_results_and_skip_the_free_ones():
    given = _config(
        model__out_dim=128,
        data__mpps=(0.5,),  # a tuple live, a list once saved: compared as YAML reads them
        data__num_workers=2,  # sizes the stream's slide groups: compared
        data__reader_threads=4,
        training__logging_steps=10,
        training__output_dir="b",
        training__hub_token="<redacted>",
        run__world_size=1,
        run__device="cuda:0",  # not a run fact that is compared (mixed precision is)
    )
    assert resume_differences(_config(), given) == [
        "--mpps 0.5 1.0 -> 0.5",
        "--num_workers 0 -> 2",
        "--out_dim 64 -> 128",
        "processes 2 -> 1",
    ]
    assert resume_differences(_config(), _config(run__mixed_precision="bf16")) == [
        "mixed precision (resolved) no -> bf16"
    ]
    # a field that only one side has (a config of another version) is not compared
    newer = _config()
    newer["training"]["new_field"] = 1
    assert resume_differences(_config(), newer) == []
    assert {"max_steps", "lr", "seed", "num_workers", "per_device_batch_size"}.isdisjoint(FREE_FLAGS)


def test_resume_command_repeats_the_launch_of_a_multi_process_run(tmp_path, monkeypatch):
    """The fix a refused resume prints is the command that resumes: for a checkpoint of 2 processes it
    launches 2 (on CPU with ACCELERATE_USE_CPU and --multi_gpu: --cpu would start one)."""
    import yaml

    from pathfm.training.resume_check import check_resume_config, resume_command

    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(_config()))
    with pytest.raises(ValueError, match="processes 2 -> 1") as err:
        check_resume_config(ckpt, "latest", _config(run__world_size=1))
    cpu = "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2"
    assert f"({cpu} training/dino.py {ckpt / 'config.yaml'} --resume_from_checkpoint latest)" in str(err.value)
    assert resume_command("c.yaml", "latest", 1, on_cpu=True) == (
        "accelerate launch training/dino.py c.yaml --resume_from_checkpoint latest"
    )
    assert resume_command("c.yaml", "latest", 8, on_cpu=False).startswith(
        "accelerate launch --multi_gpu --num_processes 8 training/dino.py c.yaml"
    )
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 16 processes over 2 machines
    assert resume_command("c.yaml", "latest", 16, on_cpu=False).startswith(
        "accelerate launch --multi_gpu --num_processes 16 --num_machines 2 (and this run's --machine_rank, "
    )


def test_saved_config_is_the_checkpoints_own_else_its_run_folders(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    assert saved_config_path(ckpt) is None
    (tmp_path / "run" / "config.yaml").write_text("{}")
    assert saved_config_path(ckpt) == tmp_path / "run" / "config.yaml"  # a checkpoint of an older version
    (ckpt / "config.yaml").write_text("{}")
    assert saved_config_path(ckpt) == ckpt / "config.yaml"
    loose = tmp_path / "copied"  # a checkpoint copied out of its run folder, without its own config
    loose.mkdir()
    assert saved_config_path(loose) is None


def test_resume_refuses_other_settings_and_continues_exactly_from_the_saved_config(cmu_svs, tmp_path):
    full_dir = tmp_path / "full"
    common = ["--max_steps", "3", "--save_steps", "1", "--warmup_epochs", "1"]
    full = _run(_args(cmu_svs, full_dir, *common))
    ckpt = full_dir / "checkpoints" / "checkpoint-1"
    saved = ckpt / "config.yaml"
    assert yaml.safe_load(saved.read_text())["training"]["max_steps"] == 3

    # another schedule and batch: one message naming both, the command that resumes; nothing written
    other = tmp_path / "other"
    changed = ["--max_steps", "6", "--per_device_batch_size", "4"]
    with pytest.raises(ValueError) as refused:
        _run(_args(cmu_svs, other, *common, *changed, "--resume_from_checkpoint", str(ckpt)))
    message = str(refused.value)
    diffs = "(--max_steps 3 -> 6, --per_device_batch_size 2 -> 4)"
    assert f"{ckpt} was written with other settings {diffs}" in message
    command = f"training/dino.py {saved} --resume_from_checkpoint {ckpt} --output_dir {other}"
    assert f"(accelerate launch {command})" in message
    assert not other.exists()
    reset_accelerate_state()

    # the saved config as the preset, free flags changed (activation checkpointing too): the same losses
    resumed_dir = tmp_path / "resumed"
    free = ["--logging_steps", "2", "--probe_size", "0", "--save_steps", "0", "--save_total_limit", "1"]
    free += ["--report_to", "tensorboard", "--reader_threads", "2", "--expected_world_size", "1"]
    free += ["--gradient_checkpointing", "true"]
    resumed = _run(
        [str(saved), "--resume_from_checkpoint", str(ckpt), "--output_dir", str(resumed_dir), *free]
    )
    assert resumed["resumed_from"] == str(ckpt) and resumed["steps"] == 3
    assert resumed["losses"] == full["losses"][1:]


def _wait_and_interrupt(metrics: Path, deadline_s: float = 300) -> None:
    """Ctrl-C to this process once the run has logged its first step (the loop's handler is installed)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if metrics.is_file() and metrics.read_text().strip():
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.02)


def test_ctrl_c_before_the_first_checkpoint_then_the_same_command_starts_afresh(
    cmu_svs, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    argv = _args(cmu_svs, out, "--max_steps", "8", "--save_steps", "0", "--report_to", "tensorboard")
    threading.Thread(target=_wait_and_interrupt, args=(out / "metrics.jsonl",), daemon=True).start()
    # the handler in force while the stop closes the stream (joining the DataLoader workers): still the
    # loop's, so that a second Ctrl-C there exits at once instead of raising inside the iterator's __del__
    before, during_close = signal.getsignal(signal.SIGINT), []
    run_and_close = dino.run_until_done_or_interrupted

    def recording(loop, stream):
        close = stream.close
        stream.close = lambda: (during_close.append(signal.getsignal(signal.SIGINT)), close())
        return run_and_close(loop, stream)

    monkeypatch.setattr(dino, "run_until_done_or_interrupted", recording)
    assert dino.cli(argv) == 130
    assert len(during_close) == 1 and isinstance(getattr(during_close[0], "__self__", None), StopFlag)
    assert signal.getsignal(signal.SIGINT) is before  # cli put the caller's handler back
    monkeypatch.undo()
    stopped = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.startswith("stopped by SIGINT at step ") and stopped.endswith(
        "last checkpoint none (nothing to resume; --save_on_interrupt saves one at the stop); run the same "
        "command again to start afresh"
    ), stopped
    assert {"config.yaml", "logs", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()
    first_logs = set((out / "logs").rglob("events.out.tfevents.*"))
    assert first_logs
    reset_accelerate_state()

    # resuming it: one line saying there is nothing to resume and what to run instead
    assert dino.cli([*argv, "--resume_from_checkpoint", "latest"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert err == [
        f"training/dino.py: error: --resume_from_checkpoint latest: {out} holds no complete checkpoint: the "
        "run there stopped before its first save (--save_steps 0: at the end only); run the same command "
        "without --resume_from_checkpoint to start it again (the folder is reused)"
    ]
    reset_accelerate_state()

    # the same command again: a whole fresh run, whose tracker logs are not mixed with the stopped one's
    assert dino.cli(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    logs = set((out / "logs").rglob("events.out.tfevents.*"))
    assert logs and not logs & first_logs


def test_num_workers_changes_the_tile_stream_so_it_is_compared():
    """Why ``num_workers`` is not a free flag: it sizes the stream's slide groups (one per rank x worker), so
    the same seed gives other batches with 2 workers than with 1 (embedded slides: 3, enough for 2 groups)."""
    import hashlib

    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data

    def first_batches(workers: int) -> list[str]:
        flags = ["--num_workers", str(workers), "--per_device_batch_size", "4", "--tile_size", "64"]
        _, d, t, _ = parse_config([*flags, "--tiles_per_slide", "6"])
        stream = build_data(d, t, 0, 1).stream
        try:
            batches = [next(stream)["pixel_values"] for _ in range(2)]
            return [hashlib.sha256(b.numpy().tobytes()).hexdigest() for b in batches]
        finally:
            stream.close()

    one = first_batches(1)
    assert first_batches(1) == one  # deterministic for a given setting
    assert first_batches(2) != one
    assert "num_workers" not in FREE_FLAGS


NEWEST = "{tmp}/run/checkpoints/checkpoint-4"
PASS_LATEST = "pass latest (with the run's --output_dir) or a folder such as"
NOT_A_CHECKPOINT = {  # spec, output_dir -> what the line says after "--resume_from_checkpoint <spec>: "
    ("{tmp}/no/such", "{tmp}/other"): (
        f"no such file or folder; {PASS_LATEST} <output_dir>/checkpoints/checkpoint-<step>"
    ),
    ("{tmp}/run", "{tmp}/other"): (
        f"a run folder, not a checkpoint; pass --output_dir {{tmp}}/run --resume_from_checkpoint latest, or "
        f"its newest checkpoint {NEWEST}"
    ),
    ("{tmp}/run/checkpoints", "{tmp}/other"): (
        f"the checkpoints/ folder of a run, not one checkpoint; pass {NEWEST}"
    ),
    ("{tmp}/run/checkpoints/checkpoint-6", "{tmp}/other"): (
        "an incomplete checkpoint (no train_complete.json: the run stopped while writing it); "
        f"{PASS_LATEST} {NEWEST}"
    ),
    ("{tmp}/run/notes.txt", "{tmp}/run"): f"a file, not a checkpoint folder; {PASS_LATEST} {NEWEST}",
    ("{tmp}/other", "{tmp}/other"): (
        "not a checkpoint folder written by training/dino.py (no train_complete.json in it); pass latest"
    ),
    ("latest", "{tmp}/missing"): (
        "--output_dir {tmp}/missing does not exist; pass the --output_dir of the run to continue, or leave "
        "out --resume_from_checkpoint to start a new run"
    ),
    ("latest", "{tmp}/other"): (
        "{tmp}/other holds no complete checkpoint (checkpoint-2 is incomplete: stopped while writing): the "
        "run there stopped before its first save (every --save_steps 100 steps and at the end); run the same "
        "command without --resume_from_checkpoint to start it again (the folder is reused)"
    ),
}


@pytest.mark.parametrize(("spec", "output_dir"), list(NOT_A_CHECKPOINT))
def test_resume_spec_that_is_not_a_checkpoint_says_what_it_is_and_what_to_pass(spec, output_dir, tmp_path):
    from pathfm.training.checkpointing import COMPLETE_MARKER, resolve_checkpoint

    made = ("run/checkpoints/checkpoint-4", "run/checkpoints/checkpoint-6", "other/checkpoints/checkpoint-2")
    for name in made:
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "run/checkpoints/checkpoint-4" / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "run/notes.txt").write_text("")
    fill = {"tmp": str(tmp_path)}
    spec = spec.format(**fill)
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(spec, output_dir.format(**fill), save_steps=100)
    expected = NOT_A_CHECKPOINT[spec.replace(str(tmp_path), "{tmp}"), output_dir].format(**fill)
    assert str(err.value).startswith(f"--resume_from_checkpoint {spec}: {expected}"), str(err.value)


def test_a_runs_config_yaml_reads_as_a_preset_without_its_run_control_fields(tmp_path):
    from pathfm.training.config import load_preset, parse_config, save_config

    flags = ["--max_steps", "7", "--hub_token", "hf_secret", "--resume_from_checkpoint", "latest"]
    m, d, t, _ = parse_config(flags)
    path = save_config(tmp_path, m, d, t, extra={"world_size": 2})
    preset = load_preset(path)
    assert preset["max_steps"] == 7 and preset["output_dir"] == t.output_dir
    assert not {"hub_token", "resume_from_checkpoint", "overwrite_output_dir", "world_size"} & set(preset)
    m2, d2, t2, _ = parse_config([str(path)])
    assert (m2, d2) == (m, d) and t2.max_steps == 7
    assert t2.resume_from_checkpoint is None and t2.hub_token is None


def test_mask_cache_dir_keeps_computed_masks_for_later_runs(cmu_svs, tmp_path, monkeypatch):
    """``--mask_cache_dir``: the first run's data step writes each slide's tissue mask; a later one (memory
    cache cleared, as in a new process) reads it back instead of reading a thumbnail again, and the tiles
    are the same. A free flag: it cannot change what the run computes."""
    import hashlib

    from pathfm.datasets_scripts.slide import SlideReader
    from pathfm.datasets_scripts.tissue import clear_mask_cache
    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data

    cache = tmp_path / "masks"
    flags = ["--slides", str(cmu_svs), "--num_workers", "0", "--per_device_batch_size", "4", "--tile_size", "64"]

    def first_batch(*extra: str) -> str:
        clear_mask_cache()
        _, d, t, _ = parse_config([*flags, *extra, "--output_dir", str(tmp_path / "run")])
        stream = build_data(d, t, 0, 1).stream
        try:
            return hashlib.sha256(next(stream)["pixel_values"].numpy().tobytes()).hexdigest()
        finally:
            stream.close()

    uncached = first_batch()
    assert first_batch("--mask_cache_dir", str(cache)) == uncached
    assert [p.suffix for p in cache.iterdir()] == [".npz"]
    thumbnails, original = [], SlideReader.thumbnail

    def counted(self, *args, **kwargs):
        thumbnails.append(self.path)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SlideReader, "thumbnail", counted)
    assert first_batch("--mask_cache_dir", str(cache)) == uncached and thumbnails == []
    assert first_batch() == uncached and len(thumbnails) == 1  # without the flag: computed again
    assert "mask_cache_dir" in FREE_FLAGS
