"""A user's cohort: loaders and their errors, the CV runner, paired bootstrap CIs, the CLI end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pathfm.evaluation.bootstrap import paired_bootstrap
from pathfm.evaluation.cohort_data import Cohort, from_embeddings, from_table, load_cohort
from pathfm.evaluation.cohort_probe import cli, make_plans, probe_cohort
from pathfm.evaluation.probe_runner import RunOptions
from pathfm.evaluation.protocol import LinearProbeConfig
from PIL import Image
from safetensors.torch import save_file


def _synthetic(n_patients: int = 30, per_patient: int = 6, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    groups = [f"p{i}" for i in range(n_patients) for _ in range(per_patient)]
    return labels, groups


def _cohort(x: np.ndarray, labels: np.ndarray, groups: list[str]) -> Cohort:
    ids = [f"s{i}" for i in range(len(labels))]
    return Cohort("synthetic", "memory", ids, labels, ("a", "b"), groups, None, torch.from_numpy(x).float())


def _options(tmp_path: Path) -> RunOptions:
    return RunOptions(tmp_path, probe=LinearProbeConfig(n_runs=2, max_steps=300))


def test_known_quality_beats_noise_and_identical_models_tie(tmp_path: Path) -> None:
    labels, groups = _synthetic()
    rng = np.random.default_rng(1)
    signal = np.eye(2)[labels] * 2.0 + rng.normal(0, 0.7, (len(labels), 2))  # label kept, with noise
    good = signal @ rng.normal(0, 1, (2, 32))  # fixed random projection to 32 dims: still linearly separable
    noise = rng.normal(0, 1, (len(labels), 32))
    cohort = _cohort(good, labels, groups)
    plans, _, _ = make_plans(cohort, folds=3, seeds=[0])
    a = probe_cohort(torch.from_numpy(good).float(), cohort, plans, _options(tmp_path))
    b = probe_cohort(torch.from_numpy(noise).float(), cohort, plans, _options(tmp_path))
    assert (a["oof_pred"] >= 0).all()  # 3 folds: every sample tested once
    ci = paired_bootstrap(labels, a["oof_pred"], b["oof_pred"], 2, groups, n_boot=1000)
    assert ci["a"] > 0.85 and abs(ci["b"] - 0.5) < 0.2
    assert ci["excludes_zero"] and ci["ci_low"] > 0.1
    same = paired_bootstrap(labels, a["oof_pred"], a["oof_pred"], 2, groups, n_boot=200)
    assert same["ci_low"] <= 0 <= same["ci_high"] and not same["excludes_zero"]


def test_bootstrap_difference_matches_hand_computation() -> None:
    y = [0, 0, 1, 1]
    # A: recall 1/2 on class 0, 1 on class 1 -> 0.75; B: 0 and 1/2 -> 0.25
    ci = paired_bootstrap(y, [0, 1, 1, 1], [1, 1, 1, 0], 2, n_boot=500, seed=3)
    assert ci["a"] == pytest.approx(0.75) and ci["b"] == pytest.approx(0.25)
    assert ci["difference"] == pytest.approx(0.5)
    again = paired_bootstrap(y, [0, 1, 1, 1], [1, 1, 1, 0], 2, n_boot=500, seed=3)
    assert again == ci


def _tile_table(tmp_path: Path, he_tiles: list[np.ndarray], rows: list[str]) -> Path:
    for i in range(4):
        Image.fromarray(he_tiles[i]).save(tmp_path / f"t{i}.png")
    table = tmp_path / "cohort.csv"
    table.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    return table


def test_table_errors_name_file_and_row(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    ok = _tile_table(tmp_path, he_tiles, ["t0.png,tumour,p1", "t1.png,normal,p2", "t2.png,tumour,p3"])
    cohort = from_table(ok)
    assert cohort.class_names == ("normal", "tumour") and cohort.labels.tolist() == [1, 0, 1]
    assert cohort.groups == ["p1", "p2", "p3"] and Path(cohort.ids[0]) == tmp_path / "t0.png"
    missing = _tile_table(tmp_path, he_tiles, ["t0.png,tumour,p1", "nope.png,normal,p2"])
    with pytest.raises(ValueError, match=r"cohort.csv: row 2: tile .*nope.png not found"):
        from_table(missing)
    unknown = _tile_table(tmp_path, he_tiles, ["t0.png,tumour,p1", "t1.png,stroma,p2"])
    with pytest.raises(ValueError, match=r"cohort.csv: row 2: unknown label 'stroma'"):
        from_table(unknown, ("normal", "tumour"))


def test_embedding_formats_round_trip(tmp_path: Path) -> None:
    import pandas as pd

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids, labels, groups = ["a", "b", "c", "d"], ["x", "y", "x", "y"], ["g1", "g1", "g2", "g2"]
    np.savez(
        tmp_path / "e.npz", embeddings=x, ids=np.array(ids), labels=np.array(labels), groups=np.array(groups)
    )
    pd.DataFrame({"id": ids, "label": labels, "group": groups, "embedding": list(x)}).to_parquet(
        tmp_path / "e.parquet"
    )
    save_file(
        {"embeddings": torch.from_numpy(x)},
        str(tmp_path / "e.safetensors"),
        metadata={"ids": json.dumps(ids), "labels": json.dumps(labels), "groups": json.dumps(groups)},
    )
    for name in ("e.npz", "e.parquet", "e.safetensors"):
        c = load_cohort(tmp_path / name)
        assert c.ids == ids and c.labels.tolist() == [0, 1, 0, 1] and c.groups == groups, name
        assert torch.equal(c.embeddings, torch.from_numpy(x)), name
    x[2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", embeddings=x, ids=np.array(ids), labels=np.array(labels))
    with pytest.raises(ValueError, match=r"bad.npz: row 3: embedding has NaN"):
        from_embeddings(tmp_path / "bad.npz")


def _run_cli(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cohort_probe.py", *args, "--max_steps", "3000"])
    code = cli()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_grouped_cv_on_embeddings_writes_split_map(tmp_path: Path, capsys, monkeypatch) -> None:
    labels, groups = _synthetic(n_patients=15, per_patient=4)
    rng = np.random.default_rng(0)
    x = (np.eye(2)[labels] @ rng.normal(0, 10, (2, 8)) + rng.normal(0, 3, (len(labels), 8))).astype(
        np.float32
    )
    ids = np.array([f"s{i}" for i in range(len(labels))])
    np.savez(tmp_path / "emb.npz", embeddings=x, ids=ids, labels=labels, groups=np.array(groups))
    out = tmp_path / "out"
    code, _, err = _run_cli(
        capsys,
        monkeypatch,
        "--dataset",
        str(tmp_path / "emb.npz"),
        "--output_dir",
        str(out),
        "--folds",
        "3",
        "--split_seeds",
        "0,1",
        "--n_runs",
        "1",
        "--n_boot",
        "100",
    )
    assert code == 0, err
    res = json.loads((out / "emb.npz" / "results.json").read_text())
    assert (
        res["protocol"]["splits"]["kind"] == "3-fold" and res["protocol"]["name"] == "pathfm-linear-v1+custom"
    )
    assert (
        len(res["linear_probe"]["test"]["balanced_accuracy"]["values"]) == 3 * 2 * 1
    )  # folds x split seeds x head seeds
    for seed in ("0", "1"):
        assignment = res["split_assignment"][seed]
        assert sorted(assignment) == sorted(set(groups)) and set(assignment.values()) == {0, 1, 2}
    for rnd in res["rounds"]:
        assert rnd["splits"]["leaking_groups"] == {}
    assert res["linear_probe"]["test"]["balanced_accuracy"]["mean"] > 0.9
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()


def test_cli_given_split_with_leak_warns_and_errors_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    labels, groups = _synthetic(n_patients=12, per_patient=2)
    splits = np.array(["train", "validation", "test"] * 8)  # patients' two tiles land in different splits
    x = np.random.default_rng(0).normal(0, 1, (len(labels), 4)).astype(np.float32)
    ids = np.array([f"s{i}" for i in range(len(labels))])
    np.savez(tmp_path / "e.npz", embeddings=x, ids=ids, labels=labels, groups=np.array(groups), splits=splits)
    code, stdout, err = _run_cli(
        capsys,
        monkeypatch,
        "--dataset",
        str(tmp_path / "e.npz"),
        "--output_dir",
        str(tmp_path / "o"),
        "--n_runs",
        "1",
        "--n_boot",
        "50",
    )
    assert code == 0, err
    assert "WARNING" in stdout and "group(s) in more than one split (leakage)" in stdout
    res = json.loads((tmp_path / "o" / "e.npz" / "results.json").read_text())
    assert (
        res["protocol"]["splits"]["kind"] == "given"
        and len(res["protocol"]["splits"]["leaking_groups"]) == 12
    )
    code, _, err = _run_cli(
        capsys, monkeypatch, "--dataset", str(tmp_path / "no.csv"), "--output_dir", str(tmp_path)
    )
    assert code == 2 and err.strip().count("\n") == 0 and "no.csv: no such file" in err


@pytest.mark.parametrize("scored", ["validation", "test"])
def test_cli_one_class_scored_split_is_one_line(tmp_path: Path, capsys, monkeypatch, scored: str) -> None:
    """A user's split column whose validation or test rows are all one class: one line naming the file, the
    split and the class, with the fix; nothing written."""
    labels = np.array(["normal", "tumour"] * 6 + ["tumour"] * 4 + ["normal", "tumour"] * 2)
    other = {"validation": "test", "test": "validation"}[scored]
    splits = np.array(["train"] * 12 + [scored] * 4 + [other] * 4)
    x = np.random.default_rng(0).normal(0, 1, (len(labels), 4)).astype(np.float32)
    ids = np.array([f"s{i}" for i in range(len(labels))])
    np.savez(tmp_path / "e.npz", embeddings=x, ids=ids, labels=labels, splits=splits)
    out = tmp_path / "o"
    code, _, err = _run_cli(
        capsys, monkeypatch, "--dataset", str(tmp_path / "e.npz"), "--output_dir", str(out)
    )
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert f"e.npz: the {scored} split holds only class 'tumour' (4 rows)" in err
    assert f"set split={scored} on some rows of 'normal', or drop the split column" in err
    assert not out.exists()


def test_cli_fold_error_names_file_and_label(tmp_path: Path, capsys, monkeypatch) -> None:
    table = tmp_path / "cohort.npz"
    x = np.zeros((12, 4), dtype=np.float32)
    ids = np.array([f"s{i}" for i in range(12)])
    np.savez(table, embeddings=x, ids=ids, labels=np.array(["normal"] * 10 + ["tumour"] * 2))
    code, _, err = _run_cli(
        capsys, monkeypatch, "--dataset", str(table), "--output_dir", str(tmp_path / "o"), "--folds", "3"
    )
    assert code == 2 and err.strip().count("\n") == 0, err
    assert f"{table}: class 'tumour' has 2 samples, fewer than the 3 folds" in err


def _slide_manifest(tmp_path: Path, splits: list[str]) -> Path:
    from pathfm.datasets_scripts.embedded import embedded_slides

    rows = ["slide,label,group,split,mpp"]
    for record, label, split in zip(embedded_slides(None), ("skin", "other", "skin"), splits, strict=True):
        rows.append(f"{record.path},{label},{record.slide_id},{split},{record.mpp or ''}")
    manifest = tmp_path / "slides.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_slide_manifest_mean_pools_tissue_tiles(tmp_path: Path) -> None:
    from pathfm.evaluation.cohort_slides import SlideManifest

    manifest = SlideManifest(_slide_manifest(tmp_path, ["train"] * 3), max_tiles=4)
    rows = [t[0] for t in manifest.tiles]
    assert rows == [0] * 4 + [1] * 4 + [2] * 4
    x = torch.arange(12 * 2, dtype=torch.float32).reshape(12, 2)
    pooled = manifest.cohort(x).embeddings
    torch.testing.assert_close(pooled, torch.stack([x[0:4].mean(0), x[4:8].mean(0), x[8:12].mean(0)]))
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\nnope.svs,a\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 1: slide .*nope.svs not found"):
        SlideManifest(bad)


def test_cli_slide_manifest_with_a_model(tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch) -> None:
    manifest = _slide_manifest(tmp_path, ["train", "train", "validation"])
    # validation needs both classes: a second path to the 'other' slide (the ids are paths, kept unique)
    rows = manifest.read_text().splitlines()
    other = Path(rows[2].split(",")[0])
    copy = tmp_path / f"copy{other.suffix}"
    copy.symlink_to(other)
    mpp = rows[2].rsplit(",", 1)[1]
    manifest.write_text("\n".join([*rows, f"{copy},other,copy,validation,{mpp}"]) + "\n")
    code, out, err = _run_cli(
        capsys,
        monkeypatch,
        "--dataset",
        str(manifest),
        "--model",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path / "o"),
        "--tiles_per_slide",
        "2",
        "--n_runs",
        "1",
        "--no_model_card",
        "--num_workers",
        "0",
    )
    assert code == 0, err
    assert "4 slides, 8 tissue tiles" in out
    res = json.loads(next((tmp_path / "o").glob("*/results.json")).read_text())
    assert res["task"]["samples"] == 4 and res["model"]["embedding_dim"] > 0
    assert set(res["linear_probe"]) == {"validation"}
