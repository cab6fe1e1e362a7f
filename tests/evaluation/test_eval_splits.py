"""Grouped / stratified splits and k-fold CV: properties over random datasets, leakage, reproducibility."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pathfm.evaluation.splits import (
    SplitError,
    given_split,
    grouped_kfold,
    leaking_groups,
    split_report,
    stratified_group_split,
)


def _random_dataset(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(10, 40))
    sizes = rng.integers(1, 12, n_groups)
    groups = np.repeat([f"patient-{i}" for i in range(n_groups)], sizes)
    # labels mostly per patient, some patients mixed
    base = rng.integers(0, 3, n_groups)
    labels = np.where(rng.random(len(groups)) < 0.8, np.repeat(base, sizes), rng.integers(0, 3, len(groups)))
    return labels, groups


@pytest.mark.parametrize("seed", range(40))
def test_grouped_split_never_shares_a_group(seed: int) -> None:
    labels, groups = _random_dataset(seed)
    try:
        plan = stratified_group_split(labels, groups, seed=seed)
    except SplitError:
        return  # too few groups of a class for 5 folds: refused, never leaked
    for g in np.unique(groups):
        assert len({plan.splits[i] for i in np.flatnonzero(groups == g)}) == 1
    assert leaking_groups(groups, plan.splits) == {}
    assert all(plan.group_split[str(groups[i])] == plan.splits[i] for i in range(len(groups)))


@pytest.mark.parametrize("seed", range(40))
def test_ungrouped_stratification_within_one_per_class(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, int(rng.integers(20, 300)))
    labels[:20] = np.repeat(np.arange(4), 5)  # every class can fill every split
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    plan = stratified_group_split(labels, None, fractions, seed=seed)
    for c in range(4):
        n_c = int((labels == c).sum())
        for split, frac in fractions.items():
            got = int((labels[plan.indices(split)] == c).sum())
            assert abs(got - n_c * frac) <= 1, (c, split, got, n_c)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_folds_partition_the_data(seed: int, grouped: bool) -> None:
    labels, groups = _random_dataset(seed + 100)
    try:
        plans = grouped_kfold(labels, groups if grouped else None, k=3, seed=seed)
    except SplitError:
        return
    tested = np.concatenate([p.indices("test") for p in plans])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # each sample tested exactly once
    for p in plans:
        assert len(p.indices("train")) + len(p.indices("validation")) + len(p.indices("test")) == len(labels)
        if grouped:
            assert leaking_groups(groups, p.splits) == {}
        else:  # ungrouped folds: floor or ceil of n_c / k per class
            for c in np.unique(labels):
                n_c = int((labels == c).sum())
                assert abs(int((labels[p.indices("test")] == c).sum()) - n_c / 3) < 1


def test_leaking_split_column_is_detected() -> None:
    groups = ["a", "a", "b", "b", "c"]
    plan, leaks = given_split(["train", "test", "train", "train", "validation"], groups)
    assert leaks == {"a": ["test", "train"]}
    assert plan.group_split["a"] == "test+train" and plan.group_split["b"] == "train"
    assert split_report(plan, [0, 1, 0, 1, 0], groups)["leaking_groups"] == {"a": ["test", "train"]}
    _, none = given_split(["train", "train", "test", "test", "validation"], groups)
    assert none == {}
    with pytest.raises(SplitError, match="holds \\['val'\\]"):
        given_split(["train", "val", "test", "test", "validation"], groups)


def test_too_few_groups_of_a_class_names_it() -> None:
    labels = ["tumour"] * 10 + ["normal"] * 10
    groups = [f"p{i}" for i in range(10)] + ["q1"] * 5 + ["q2"] * 5
    with pytest.raises(SplitError, match="class 'normal' occurs in 2 groups"):
        stratified_group_split(labels, groups)
    with pytest.raises(SplitError, match="class 'b' has 2 samples"):
        stratified_group_split(["a"] * 10 + ["b"] * 2)


def test_errors_name_the_label_of_an_index() -> None:
    """A cohort's labels are indices into its class names: errors say the name, not the index."""
    names = ("normal", "tumour")
    with pytest.raises(SplitError, match="^class 'tumour' has 2 samples, fewer than the 3 folds"):
        grouped_kfold([0] * 10 + [1] * 2, None, 3, class_names=names)
    groups = [f"p{i}" for i in range(10)] + ["q1"] * 5 + ["q2"] * 5
    with pytest.raises(SplitError, match="^class 'tumour' occurs in 2 groups, fewer than the 4 folds"):
        grouped_kfold([0] * 10 + [1] * 10, groups, 4, class_names=names)
    with pytest.raises(SplitError, match="^class 'tumour' has 2 samples, too few for a"):
        stratified_group_split([0] * 10 + [1] * 2, class_names=names)


def test_same_seed_same_split_in_two_processes() -> None:
    labels, groups = _random_dataset(7)
    code = (
        "import json, numpy as np;"
        "from pathfm.evaluation.splits import stratified_group_split, grouped_kfold;"
        f"l=np.array({labels.tolist()}); g=np.array({groups.tolist()});"
        "print(json.dumps([stratified_group_split(l, g, seed=3).splits,"
        " [p.splits for p in grouped_kfold(l, None, 4, seed=3)]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    here = [
        list(stratified_group_split(labels, groups, seed=3).splits),
        [list(p.splits) for p in grouped_kfold(labels, None, 4, seed=3)],
    ]
    assert json.loads(out) == here
    assert stratified_group_split(labels, groups, seed=4).splits != tuple(here[0])


def test_random_datasets_are_mostly_splittable() -> None:
    """The property tests above skip refused datasets; make sure they are the exception."""
    refused = 0
    for seed in range(40):
        try:
            stratified_group_split(*_random_dataset(seed), seed=seed)
        except SplitError:
            refused += 1
    assert refused <= 4
