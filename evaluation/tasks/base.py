"""Common shape of an evaluation task: a ``datasets`` builder that lists, validates and loads samples.

Lifecycle (as eva's datasets): find files -> build the sample list and split -> validate (class names,
expected counts) -> load. Every task is a :class:`datasets.GeneratorBasedBuilder` (datasets 5 has no
dataset scripts; the builder is a class in our code) whose ``as_streaming_dataset(split)`` /
``download_and_prepare()`` give ordinary Hugging Face datasets with features
``{"image": Image(), "label": ClassLabel(names), "source": Value("string")}``.

The probe's embedding loop calls :meth:`EvalTask.list_samples` and :meth:`EvalTask.load_image` directly
(through a map-style torch dataset, see ``embed.py``): the same listing, validation and pixel loading, but
without ``datasets``' per-example PNG encode/decode of in-memory arrays (PCam, slide tiles).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
from pathfm.evaluation.tasks.common import (  # re-exported: the names tasks import from here
    SPLITS,
    Sample,
    TaskDataError,
    list_class_folders,
    read_rgb,
)
from PIL import Image

__all__ = ["SPLITS", "EvalTask", "EvalTaskConfig", "Sample", "TaskDataError", "list_class_folders", "read_rgb"]


@dataclass
class EvalTaskConfig(datasets.BuilderConfig):
    """Config shared by all tasks.

    Attributes:
        check_counts: enforce the official per-split counts. Set False for the miniature layouts used in tests
            (class names and folder structure are still checked).
    """

    check_counts: bool = True


class EvalTask(datasets.GeneratorBasedBuilder):
    """Base class: subclasses set the class attributes and implement ``_list`` and ``load_image``.

    Class attributes:
        TASK_NAME: CLI name (``--task``).
        CLASS_NAMES: class names in label order.
        SPLIT_NAMES: splits this task provides (subset of ``SPLITS``; train and validation always).
        EXPECTED_COUNTS: official number of samples per split.
        PROXY_LABELS: True when labels are a proxy (embedded tasks), not a benchmark.
        DESCRIPTION: one paragraph for reports and model cards.
    """

    BUILDER_CONFIG_CLASS = EvalTaskConfig
    VERSION = datasets.Version("1.0.0")
    TASK_NAME: ClassVar[str] = ""
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    SPLIT_NAMES: ClassVar[tuple[str, ...]] = ("train", "validation")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {}
    PROXY_LABELS: ClassVar[bool] = False
    DESCRIPTION: ClassVar[str] = ""

    def __init__(self, data_dir: str | Path | None = None, check_counts: bool = True, **kwargs: Any) -> None:
        super().__init__(
            data_dir=str(data_dir) if data_dir is not None else None, check_counts=check_counts, **kwargs
        )
        self._samples: dict[str, list[Sample]] = {}

    # ------------------------------------------------------------------ to implement in subclasses
    def _list(self, split: str) -> list[Sample]:
        """Find the samples of ``split`` (raise ``TaskDataError`` naming missing folders/files)."""
        raise NotImplementedError

    def load_image(self, source: str) -> np.ndarray:
        """Pixels of one sample: uint8 (H, W, 3) RGB."""
        raise NotImplementedError

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        """Whether ``data_dir`` looks like it holds this task's data (used by ``--task all``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.CLASS_NAMES)

    @property
    def root(self) -> Path:
        """The data folder (``data_dir``)."""
        if self.config.data_dir is None:
            raise TaskDataError(f"task {self.TASK_NAME!r} needs --data_dir")
        return Path(self.config.data_dir)

    def list_samples(self, split: str) -> list[Sample]:
        """The validated, ordered samples of ``split`` (cached after the first call).

        Raises:
            ValueError: unknown split for this task.
            TaskDataError: missing folders/files, wrong class names, or counts off (when ``check_counts``).
        """
        if split not in self.SPLIT_NAMES:
            raise ValueError(f"task {self.TASK_NAME!r} has splits {self.SPLIT_NAMES}, not {split!r}")
        if split not in self._samples:
            samples = self._list(split)
            self._validate(split, samples)
            self._samples[split] = samples
        return self._samples[split]

    def _validate(self, split: str, samples: Sequence[Sample]) -> None:
        if not samples:
            raise TaskDataError(f"{self.TASK_NAME}: split {split!r} is empty under {self.config.data_dir}")
        bad = [s for s in samples if not 0 <= s.target < self.num_classes]
        if bad:
            raise TaskDataError(
                f"{self.TASK_NAME}: {bad[0].source} has label {bad[0].target}, not in 0..{self.num_classes - 1}"
            )
        expected = self.EXPECTED_COUNTS.get(split)
        if self.config.check_counts and expected is not None and len(samples) != expected:
            raise TaskDataError(
                f"{self.TASK_NAME}: split {split!r} under {self.config.data_dir} has {len(samples)} samples, "
                f"expected {expected} (incomplete download or extraction? --no_check_counts skips this for "
                f"miniature layouts)"
            )

    def split_sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {split: len(self.list_samples(split)) for split in self.SPLIT_NAMES}

    # ------------------------------------------------------------------ datasets builder API
    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.DESCRIPTION,
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "label": datasets.ClassLabel(names=list(self.CLASS_NAMES)),
                    "source": datasets.Value("string"),
                }
            ),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        generators = []
        for split in self.SPLIT_NAMES:
            samples = self.list_samples(split)
            # A list gen_kwarg makes one shard per element: chunks of 256 samples spread over workers.
            chunks = [samples[i : i + 256] for i in range(0, len(samples), 256)]
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"chunks": chunks}))
        return generators

    def _generate_examples(self, chunks: list[list[Sample]]) -> Iterator[tuple[str, dict]]:
        for chunk in chunks:
            for sample in chunk:
                yield (
                    sample.source,
                    {
                        "image": Image.fromarray(self.load_image(sample.source)),
                        "label": sample.target,
                        "source": sample.source,
                    },
                )
