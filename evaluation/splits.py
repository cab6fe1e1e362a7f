"""Seeded, stratified, group-aware splits and k-fold cross-validation for a user's cohort.

A *group* is what must never be split (a patient; pathfm records one per slide). Every function here returns
an assignment per sample and the group -> split map, and :func:`leaking_groups` checks it.

- Without groups (every sample its own group) a single split is exactly stratified: for each class, the
  number of samples in each split is ``n_c * fraction`` rounded by largest remainder (within ±1 of the
  target); cross-validation folds get floor or ceil of ``n_c / K`` per class.
- With groups, whole groups are dealt out by scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded), which
  keeps the class mix of each fold close to the whole's; exactness is impossible when groups hold many samples.

With groups, train/validation/test fractions are realised as folds: with the default 0.6/0.2/0.2 the
groups are dealt into 5 folds, fold 0 is test, fold 1 validation and folds 2-4 train. ``--folds K`` cross-validation uses the same
folds: round i tests on fold i, validates (early stopping) on fold (i + 1) mod K and trains on the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")


class SplitError(ValueError):
    """The split asked for cannot be made from this data (the message names the class or group)."""


@dataclass(frozen=True)
class SplitPlan:
    """One assignment of samples to train / validation / test.

    Attributes:
        splits: (N,) split name of each sample.
        group_split: group -> split name (groups are sample ids when the data has no groups).
        fold: the cross-validation round this plan is (None for a single split).
    """

    splits: tuple[str, ...]
    group_split: dict[str, str]
    fold: int | None = None

    def indices(self, split: str) -> np.ndarray:
        """Row indices (int64) of ``split``."""
        return np.flatnonzero(np.asarray(self.splits) == split)


def leaking_groups(groups: Sequence[str], splits: Sequence[str]) -> dict[str, list[str]]:
    """Groups found in more than one split: ``{group: sorted split names}`` (empty when none leaks)."""
    seen: dict[str, set[str]] = {}
    for g, s in zip(groups, splits, strict=True):
        seen.setdefault(str(g), set()).add(str(s))
    return {g: sorted(s) for g, s in seen.items() if len(s) > 1}


def _n_folds(fractions: dict[str, float]) -> tuple[int, dict[str, int]]:
    """Smallest fold count m with every fraction a multiple of 1/m, and the folds each split gets."""
    if set(fractions) != set(SPLIT_NAMES) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise SplitError(f"split fractions must be train/validation/test summing to 1, got {fractions}")
    exact = {k: Fraction(v).limit_denominator(20) for k, v in fractions.items()}
    m = math.lcm(*(f.denominator for f in exact.values()))
    return m, {k: int(f * m) for k, f in exact.items()}


def _class_name(c: object, class_names: Sequence[str] | None) -> str:
    """How an error names class ``c``: its name when ``labels`` are indices into ``class_names``."""
    return str(class_names[int(c)]) if class_names is not None else str(c)


def _fold_of_groups(
    labels: np.ndarray,
    groups: np.ndarray | None,
    n_folds: int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) fold id per sample and (N,) group id (str) per sample, folds group-disjoint and stratified."""
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if groups is None:
        group_ids = np.asarray([str(i) for i in range(n)])
        small = classes[counts < n_folds]
        if len(small):
            c = small[0]
            name, count = _class_name(c, class_names), int(counts[classes == c][0])
            raise SplitError(
                f"class '{name}' has {count} samples, fewer than the {n_folds} folds this split needs; "
                "add samples, merge the class or use fewer folds"
            )
        rng = np.random.default_rng(seed)
        fold = np.empty(n, dtype=np.int64)
        offset = 0  # rotating start so that remainders of different classes land in different folds
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            fold[idx] = (np.arange(len(idx)) + offset) % n_folds
            offset = (offset + len(idx)) % n_folds
        return fold, group_ids
    from sklearn.model_selection import StratifiedGroupKFold

    group_ids = np.asarray([str(g) for g in groups])
    n_groups = len(np.unique(group_ids))
    if n_groups < n_folds:
        raise SplitError(f"{n_groups} groups, fewer than the {n_folds} folds this split needs")
    for c in classes:
        g_c = len(np.unique(group_ids[labels == c]))
        if g_c < n_folds:
            name = _class_name(c, class_names)
            raise SplitError(
                f"class '{name}' occurs in {g_c} groups, fewer than the {n_folds} folds this split needs; "
                f"every split must see it: add groups or use fewer folds"
            )
    fold = np.empty(n, dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for i, (_, test_idx) in enumerate(cv.split(np.zeros(n), labels, group_ids)):
        fold[test_idx] = i
    return fold, group_ids


def _plan(
    fold: np.ndarray, group_ids: np.ndarray, split_of_fold: dict[int, str], index: int | None
) -> SplitPlan:
    splits = tuple(split_of_fold[int(f)] for f in fold)
    leaks = leaking_groups(group_ids, splits)
    if leaks:  # cannot happen with group-disjoint folds; checked so that a bug never passes silently
        raise AssertionError(f"groups in two splits: {dict(list(leaks.items())[:3])}")
    return SplitPlan(splits, dict(zip(group_ids.tolist(), splits)), index)


def _exact_stratified(
    labels: np.ndarray, fractions: dict[str, float], seed: int, class_names: Sequence[str] | None = None
) -> SplitPlan:
    """Per class, split sizes ``n_c * fraction`` rounded by largest remainder (each within ±1 of target)."""
    rng = np.random.default_rng(seed)
    splits = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        target = {s: len(idx) * fractions[s] for s in SPLIT_NAMES}
        counts = {s: math.floor(t) for s, t in target.items()}
        for s in sorted(SPLIT_NAMES, key=lambda s: (counts[s] - target[s], rng.random()))[
            : len(idx) - sum(counts.values())
        ]:
            counts[s] += 1
        short = [s for s in SPLIT_NAMES if counts[s] == 0 and fractions[s] > 0]
        if short:
            name = _class_name(c, class_names)
            raise SplitError(
                f"class '{name}' has {len(idx)} samples, too few for a {short[0]} share of "
                f"{fractions[short[0]]}; add samples, merge the class or change the fractions"
            )
        start = 0
        for s in SPLIT_NAMES:
            splits[idx[start : start + counts[s]]] = s
            start += counts[s]
    ids = np.asarray([str(i) for i in range(len(labels))])
    return SplitPlan(tuple(splits.tolist()), dict(zip(ids.tolist(), splits.tolist())), None)


def stratified_group_split(
    labels: Sequence,
    groups: Sequence | None = None,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> SplitPlan:
    """One train/validation/test split, stratified by label, no group in two splits.

    Args:
        labels: (N,) class of each sample (any hashable values; indices into ``class_names`` if given).
        groups: (N,) group of each sample (patient), or None (each sample its own group).
        fractions: ``{"train", "validation", "test"}`` fractions, multiples of 1/m for some m <= 20
            (default 0.6 / 0.2 / 0.2).
        seed: the shuffle seed; the same seed gives the same split in any process.
        class_names: names of the classes ``labels`` index, used in error messages only.

    Raises:
        SplitError: a class has fewer samples (or groups) than the folds the fractions need.
    """
    fractions = fractions or {"train": 0.6, "validation": 0.2, "test": 0.2}
    m, per_split = _n_folds(fractions)
    if groups is None:
        return _exact_stratified(np.asarray(labels), fractions, seed, class_names)
    fold, group_ids = _fold_of_groups(np.asarray(labels), np.asarray(groups), m, seed, class_names)
    split_of_fold, next_fold = {}, 0
    for split in ("test", "validation", "train"):
        for _ in range(per_split[split]):
            split_of_fold[next_fold] = split
            next_fold += 1
    return _plan(fold, group_ids, split_of_fold, None)


def grouped_kfold(
    labels: Sequence,
    groups: Sequence | None,
    k: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[SplitPlan]:
    """K cross-validation rounds: round i tests on fold i, validates on fold (i+1) mod K, trains on the rest.

    The test folds partition the data (every sample is tested exactly once). ``class_names``: names of the
    classes ``labels`` index, used in error messages only.

    Raises:
        SplitError: k < 3, or a class has fewer samples (or groups) than k.
    """
    if k < 3:
        raise SplitError(f"--folds {k}: cross-validation needs at least 3 folds (train, validation, test)")
    fold, group_ids = _fold_of_groups(
        np.asarray(labels), None if groups is None else np.asarray(groups), k, seed, class_names
    )
    plans = []
    for i in range(k):
        split_of_fold = {f: "train" for f in range(k)}
        split_of_fold[i], split_of_fold[(i + 1) % k] = "test", "validation"
        plans.append(_plan(fold, group_ids, split_of_fold, i))
    return plans


def given_split(splits: Sequence[str], groups: Sequence | None) -> tuple[SplitPlan, dict[str, list[str]]]:
    """Keep a user's own ``split`` column; return it with the groups that cross splits (leakage).

    Raises:
        SplitError: a split name other than train/validation/test, or train/validation missing.
    """
    names = [str(s) for s in splits]
    unknown = sorted(set(names) - set(SPLIT_NAMES))
    if unknown:
        raise SplitError(f"split column holds {unknown}; allowed: {list(SPLIT_NAMES)}")
    missing = [s for s in ("train", "validation") if s not in names]
    if missing:
        raise SplitError(f"split column has no {missing} rows (train and validation are needed)")
    group_ids = [str(g) for g in groups] if groups is not None else [str(i) for i in range(len(names))]
    leaks = leaking_groups(group_ids, names)
    group_split = {}
    for g, s in zip(group_ids, names):
        group_split[g] = "+".join(leaks[g]) if g in leaks else s
    return SplitPlan(tuple(names), group_split, None), leaks


def check_scored_splits(
    plan: SplitPlan, labels: Sequence[int], class_names: Sequence[str], source: str
) -> None:
    """Refuse a validation or test split that holds a single class of several (a user's ``split`` column).

    Its balanced accuracy would be one class's recall and its AUROC undefined, both reported as if they
    measured the model.

    Args:
        plan: the split to check.
        labels: (N,) class index of each sample into ``class_names``.
        class_names: the cohort's classes.
        source: the file the split came from, named in the error.

    Raises:
        SplitError: naming ``source``, the split, its only class and the classes to add.
    """
    labels = np.asarray(labels)
    if len(class_names) < 2:
        return
    for split in ("validation", "test"):
        idx = plan.indices(split)
        present = np.unique(labels[idx])
        if len(present) == 1:
            only = class_names[int(present[0])]
            others = [name for i, name in enumerate(class_names) if i != int(present[0])]
            raise SplitError(
                f"{source}: the {split} split holds only class '{only}' ({len(idx)} rows), so its balanced "
                f"accuracy and AUROC would not measure the model; set split={split} on some rows of "
                f"{', '.join(repr(n) for n in others)}, or drop the split column for a stratified, "
                "group-aware split"
            )


def split_report(plan: SplitPlan, labels: Sequence, groups: Sequence | None) -> dict:
    """Samples, groups and per-class counts per split, plus the leakage check, for ``results.json``."""
    labels = np.asarray([str(x) for x in labels])
    group_ids = np.asarray([str(g) for g in groups]) if groups is not None else None
    out = {"leaking_groups": leaking_groups(group_ids, plan.splits) if group_ids is not None else {}}
    for split in SPLIT_NAMES:
        idx = plan.indices(split)
        classes, counts = np.unique(labels[idx], return_counts=True)
        out[split] = {
            "samples": len(idx),
            "groups": len(np.unique(group_ids[idx])) if group_ids is not None else None,
            "class_counts": dict(zip(classes.tolist(), counts.tolist())),
        }
    return out
