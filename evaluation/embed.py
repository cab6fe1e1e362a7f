"""Compute one embedding per image with a frozen backbone.

Images are loaded and preprocessed by the model's own processor in DataLoader workers (one thread each),
while the main process runs the forward pass: on CPU the forward dominates and the input pipeline hides
behind it (``benchmarks/eval.py`` compares against a bare ``torch.no_grad()`` loop).

Pooling:
- ``pooler_output``: the model's own pooled output (CLS for pathfm ViTs with ``pooling="cls"``).
- ``cls_mean``: CLS token concatenated with the mean of the patch tokens of ``last_hidden_state`` (register
  tokens excluded), (B, 2 * hidden).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from pathfm.evaluation.backbone import Backbone
from pathfm.evaluation.protocol import POOLINGS
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class TaskImages(Dataset):
    """Map-style dataset: sample i -> preprocessed ``pixel_values`` (3, H, W) float32."""

    def __init__(self, task: EvalTask, samples: Sequence[Sample], processor: object) -> None:
        self.task, self.samples, self.processor = task, list(samples), processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tensor:
        source = self.samples[index].source
        try:
            image = self.task.load_image(source)
        except TaskDataError:
            raise
        except Exception as err:  # noqa: BLE001  (PIL, h5py, tifffile, openslide raise many types)
            raise TaskDataError(f"cannot read {source}: {type(err).__name__}: {err}") from None
        if not image.flags.writeable:  # torch.from_numpy in the processor warns on read-only arrays
            image = image.copy()
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers only decode and preprocess; the forward pass owns the cores


def pool(outputs: object, pooling: str, num_register_tokens: int = 0) -> Tensor:
    """Pool model outputs into (B, D) embeddings.

    Args:
        outputs: a ``BaseModelOutputWithPooling`` (``pooler_output`` (B, D), ``last_hidden_state``
            (B, 1 + registers + patches, hidden)).
        pooling: one of ``POOLINGS``.
        num_register_tokens: register tokens after CLS, excluded from the patch mean.

    Raises:
        ValueError: unknown pooling, or a model without ``pooler_output``.
    """
    if pooling == "pooler_output":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError("the model returns no pooler_output; use --pooling cls_mean")
        return pooled
    if pooling == "cls_mean":
        hidden = outputs.last_hidden_state
        return torch.cat([hidden[:, 0], hidden[:, 1 + num_register_tokens :].mean(dim=1)], dim=1)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


def embed_samples(
    backbone: Backbone,
    task: EvalTask,
    samples: Sequence[Sample],
    pooling: str = "pooler_output",
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """Embed ``samples`` in order.

    Args:
        backbone: frozen model + processor.
        task: provides ``load_image``.
        samples: images to embed.
        pooling: one of ``POOLINGS``.
        batch_size: images per forward pass.
        num_workers: DataLoader workers (default min(4, CPU count); 0 = main process).
        progress: print a line per ~10 % of batches.

    Returns:
        ``(embeddings (N, D) float32 on CPU, {"seconds": wall time, "images_per_second": rate})``.
    """
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1)
    loader = DataLoader(
        TaskImages(task, samples, backbone.processor),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
    )
    device = next(backbone.model.parameters()).device
    registers = int(getattr(backbone.model.config, "num_register_tokens", 0) or 0)
    chunks: list[Tensor] = []
    start = time.perf_counter()
    every = max(1, len(loader) // 10)
    with torch.inference_mode():
        for i, pixel_values in enumerate(_one_line_errors(loader)):
            outputs = backbone.model(pixel_values=pixel_values.to(device))
            chunks.append(pool(outputs, pooling, registers).float().cpu())
            if progress and (i + 1) % every == 0:
                done = min((i + 1) * batch_size, len(samples))
                rate = done / (time.perf_counter() - start)
                print(f"  embedded {done}/{len(samples)} ({rate:.1f} images/s)", flush=True)
    seconds = time.perf_counter() - start
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return embeddings, {"seconds": seconds, "images_per_second": len(samples) / max(seconds, 1e-9)}


def _one_line_errors(loader: DataLoader) -> Iterator[Tensor]:
    """Iterate ``loader``; a :class:`TaskDataError` raised in a worker process comes back as the worker's
    one-line message (torch re-raises it with the worker's traceback folded into the text)."""
    try:
        yield from loader
    except TaskDataError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        if len(lines) > 1 and "Traceback" in str(err):
            raise TaskDataError(lines[-1].split("TaskDataError: ", 1)[-1]) from None
        raise


def targets_of(samples: Sequence[Sample]) -> Tensor:
    """(N,) int64 targets."""
    return torch.from_numpy(np.asarray([s.target for s in samples], dtype=np.int64))
