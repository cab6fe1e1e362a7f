"""Run ``pathfm-linear-v1`` on one task: cached embeddings -> N linear heads + k-NN -> metrics dict.

The result dict is what ``results.json`` holds (see ``report.py`` for the files written from it).
"""

from __future__ import annotations

import datetime
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pathfm.evaluation.backbone import Backbone
from pathfm.evaluation.embed import embed_samples, targets_of
from pathfm.evaluation.embedding_cache import CacheKey, EmbeddingCache
from pathfm.evaluation.knn_probe import knn_predict
from pathfm.evaluation.linear_head import HeadFit, predict_proba, train_linear_head
from pathfm.evaluation.protocol import PROTOCOL_NAME, KnnConfig, LinearProbeConfig, derive_schedule
from pathfm.evaluation.scoring import classification_scores, confusion_matrix
from pathfm.evaluation.tasks.base import EvalTask
from torch import Tensor

import pathfm

METRICS = ("balanced_accuracy", "f1_macro", "auroc")


@dataclass
class RunOptions:
    """Per-invocation options that are not part of the protocol.

    Attributes:
        embeddings_dir: cache root.
        pooling: ``pooler_output`` or ``cls_mean``.
        batch_size: images per forward pass.
        num_workers: DataLoader workers for image loading (None: min(4, CPUs)).
        overwrite_embeddings: recompute embeddings and replace cached ones.
        probe: linear-head protocol settings.
        knn: k-NN settings.
        progress: print embedding progress (about every 10 % of a split).
    """

    embeddings_dir: Path
    pooling: str = "pooler_output"
    batch_size: int = 64
    num_workers: int | None = None
    overwrite_embeddings: bool = False
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    progress: bool = False


@dataclass
class TaskOutcome:
    """Result dict plus the objects reports, head export and model comparison need.

    Attributes:
        predictions: ``{split: (M,) int64}`` arg-max of the class scores averaged over the seeds' heads.
        targets: ``{split: (M,) int64}`` reference classes, same order.
    """

    results: dict
    best_fit: HeadFit
    embedding_dim: int
    predictions: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)


def summarize(values: list[float]) -> dict:
    """``{"mean", "std" (sample, ddof=1; None for one value), "values"}``.

    An undefined value (NaN: AUROC of a split with a single class) is stored as None, and then the mean and
    std are None too: results.json stays valid JSON and the report says "undefined".
    """
    if not all(math.isfinite(v) for v in values):
        return {"mean": None, "std": None, "values": [float(v) if math.isfinite(v) else None for v in values]}
    return {
        "mean": float(statistics.fmean(values)),
        "std": float(statistics.stdev(values)) if len(values) > 1 else None,
        "values": [float(v) for v in values],
    }


def _finite_or_none(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """k-NN scores per split with NaN (undefined AUROC) replaced by None."""
    return {
        split: {m: float(v) if math.isfinite(v) else None for m, v in metrics.items()}
        for split, metrics in scores.items()
    }


def get_embeddings(backbone: Backbone, task: EvalTask, options: RunOptions) -> tuple[dict, dict, dict]:
    """Embeddings and targets of every split, from the cache or computed (and cached) now.

    Returns:
        ``(embeddings {split: (N, D)}, targets {split: (N,)}, info {split: "cached" | seconds/rate dict})``.
    """
    cache = EmbeddingCache(
        options.embeddings_dir,
        CacheKey(
            backbone.model_id, backbone.revision, task.TASK_NAME, options.pooling, backbone.processor_hash
        ),
        overwrite=options.overwrite_embeddings,
    )
    embeddings, targets, info = {}, {}, {}
    for split in task.SPLIT_NAMES:
        samples = task.list_samples(split)
        cached = cache.load(split, samples)
        if cached is None:
            cached, timing = embed_samples(
                backbone,
                task,
                samples,
                options.pooling,
                options.batch_size,
                options.num_workers,
                options.progress,
            )
            cache.save(split, samples, cached)
            info[split] = {"cached": False, **timing}
        else:
            info[split] = {"cached": True}
        embeddings[split], targets[split] = cached, targets_of(samples)
    info["folder"] = str(cache.folder)
    return embeddings, targets, info


def _scores(head_or_probs: Tensor, y: Tensor, num_classes: int) -> tuple[dict, np.ndarray]:
    probs = head_or_probs.numpy()
    preds = probs.argmax(axis=1)
    return classification_scores(y.numpy(), preds, probs, num_classes), confusion_matrix(
        y.numpy(), preds, num_classes
    )


@dataclass
class ProbeRuns:
    """Linear heads (one per seed) and the k-NN probe on one train/validation/evaluation split.

    Attributes:
        fits: one :class:`HeadFit` per seed.
        per_split: ``{split: {metric: [value per seed]}}``.
        confusions: ``{split: [confusion matrix per seed]}``.
        runs: per-seed records (seed, epochs, scores) for ``results.json``.
        knn: ``{split: scores}`` of the k-NN probe.
        probabilities: ``{split: [(M, K) class scores per seed]}`` of the linear heads.
        seconds_linear, seconds_knn: wall time.
    """

    fits: list
    per_split: dict
    confusions: dict
    runs: list
    knn: dict
    probabilities: dict
    seconds_linear: float
    seconds_knn: float


def probe_embeddings(
    embeddings: dict[str, Tensor],
    targets: dict[str, Tensor],
    k: int,
    eval_splits: list[str],
    options: RunOptions,
) -> ProbeRuns:
    """Train ``n_runs`` heads (seeds 0..N-1) on ``train`` with early stopping on ``validation``, run k-NN,
    and score every split of ``eval_splits``.

    Args:
        embeddings: ``{split: (N_split, D)}`` with at least train and validation.
        targets: ``{split: (N_split,)}`` int64 class ids.
        k: number of classes.
        eval_splits: splits to score.
        options: protocol settings.
    """
    # ---- linear probe: N runs, seeds 0..N-1 ----
    t1 = time.perf_counter()
    probabilities: dict[str, list] = {s: [] for s in eval_splits}
    fits: list[HeadFit] = []
    per_split: dict[str, dict[str, list[float]]] = {s: {m: [] for m in METRICS} for s in eval_splits}
    confusions: dict[str, list[list[list[int]]]] = {s: [] for s in eval_splits}
    runs = []
    first = options.probe.first_seed
    for seed in range(first, first + options.probe.n_runs):
        fit = train_linear_head(
            embeddings["train"],
            targets["train"],
            embeddings["validation"],
            targets["validation"],
            k,
            options.probe,
            seed,
        )
        fits.append(fit)
        run = {
            "seed": seed,
            "best_epoch": fit.best_epoch,
            "epochs": fit.epochs,
            "steps": fit.steps,
            "stopped_early": fit.stopped_early,
        }
        for split in eval_splits:
            probs = predict_proba(fit.head, embeddings[split], k)
            probabilities[split].append(probs)
            scores, cm = _scores(probs, targets[split], k)
            for m in METRICS:
                per_split[split][m].append(scores[m])
            confusions[split].append(cm.tolist())
            run[split] = scores
        runs.append(run)
    t_linear = time.perf_counter() - t1

    # ---- k-NN probe (deterministic, one run) ----
    t2 = time.perf_counter()
    knn = {}
    for split in eval_splits:
        _, knn_probs = knn_predict(
            embeddings["train"],
            targets["train"],
            embeddings[split],
            k,
            options.knn.k,
            options.knn.temperature,
        )
        knn[split], _ = _scores(knn_probs, targets[split], k)
    t_knn = time.perf_counter() - t2

    return ProbeRuns(fits, per_split, confusions, runs, knn, probabilities, t_linear, t_knn)


def run_task(backbone: Backbone, task: EvalTask, options: RunOptions) -> TaskOutcome:
    """Embed (or reuse), train ``n_runs`` heads with seeds 0..N-1, run k-NN, and score everything.

    Raises:
        TaskDataError: the task's data is missing or malformed.
        CacheConflictError: cached embeddings conflict with the data (see ``embedding_cache``).
    """
    t0 = time.perf_counter()
    k = task.num_classes
    embeddings, targets, embed_info = get_embeddings(backbone, task, options)
    t_embed = time.perf_counter() - t0
    eval_splits = [s for s in ("validation", "test") if s in task.SPLIT_NAMES]

    probes = probe_embeddings(embeddings, targets, k, eval_splits, options)
    fits, per_split, confusions, runs, knn = (
        probes.fits,
        probes.per_split,
        probes.confusions,
        probes.runs,
        probes.knn,
    )
    t_linear, t_knn = probes.seconds_linear, probes.seconds_knn

    best_index = max(range(len(fits)), key=lambda i: (fits[i].best_val_balanced_accuracy, -i))
    schedule = derive_schedule(len(embeddings["train"]), options.probe)
    results = {
        "protocol": {
            "name": PROTOCOL_NAME,
            "linear": {
                **options.probe.to_dict(),
                "optimizer": "AdamW",
                "lr_schedule": (
                    f"x{options.probe.warmup_factor:.4g} for {options.probe.warmup_epochs} epochs, then constant"
                    if options.probe.warmup_epochs
                    else "constant"
                ),
                "loss": "bce (1 logit)" if k == 2 else "cross_entropy",
                "early_stopping": "validation balanced_accuracy, checked every epoch, best checkpoint kept",
                "steps_per_epoch": schedule.steps_per_epoch,
                "max_epochs": schedule.max_epochs,
                "patience_epochs": schedule.patience,
                "seeds": list(
                    range(options.probe.first_seed, options.probe.first_seed + options.probe.n_runs)
                ),
            },
            "knn": {**options.knn.to_dict(), "similarity": "cosine", "vote": "exp(sim / temperature)"},
            "pooling": options.pooling,
            "backbone": "frozen",
        },
        "model": {
            "id": backbone.model_id,
            "revision": backbone.revision,
            "random_init": backbone.random_init,
            "class": type(backbone.model).__name__,
            "embedding_dim": int(embeddings["train"].shape[1]),
            "image_processor": backbone.processor_config,
        },
        "task": {
            "name": task.TASK_NAME,
            "description": task.DESCRIPTION,
            "proxy_labels": task.PROXY_LABELS,
            "classes": list(task.CLASS_NAMES),
            "data_dir": task.config.data_dir,
            "split_sizes": {s: len(targets[s]) for s in task.SPLIT_NAMES},
            "class_counts": {
                s: np.bincount(targets[s].numpy(), minlength=k).tolist() for s in task.SPLIT_NAMES
            },
        },
        "linear_probe": {s: {m: summarize(per_split[s][m]) for m in METRICS} for s in eval_splits},
        "knn_probe": _finite_or_none(knn),
        "runs": runs,
        "best_run": {
            "seed": fits[best_index].seed,
            "confusion_matrix": {s: confusions[s][best_index] for s in eval_splits},
        },
        "embeddings": embed_info,
        "wall_time_s": {
            "embeddings": t_embed,
            "linear_probe": t_linear,
            "knn_probe": t_knn,
            "total": time.perf_counter() - t0,
        },
        "environment": {
            "pathfm": pathfm.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return TaskOutcome(
        results=results,
        best_fit=fits[best_index],
        embedding_dim=int(embeddings["train"].shape[1]),
        predictions={
            s: torch.stack(p).mean(dim=0).argmax(dim=1).numpy() for s, p in probes.probabilities.items()
        },
        targets={s: targets[s].numpy() for s in eval_splits},
    )
