"""The data step of a run: slides -> this rank's stream of uint8 tile batches, and a fixed probe batch.

The stream itself is ``tile_batches.TileBatchStream``; this module only decides which slides each rank reads,
its seed, and the RankMe probe tiles.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pathfm.datasets_scripts.resolve import catalogue_skips
from pathfm.datasets_scripts.skips import MppDisagreementWarning
from pathfm.training.config import DINODataArguments, DINOTrainingArguments
from pathfm.training.tile_batches import (
    EmptyTileStreamError,
    TileBatchStream,
    partition_slides,
    preflight_slides,
    resolve_slides,
)

logger = logging.getLogger("pathfm.dino")


@dataclass
class RunData:
    """Slides of the run and this rank's stream.

    Attributes:
        readable: Slide records that opened (all ranks).
        failed: Slides that did not open at start (skipped).
        my_slides: This rank's share of ``readable``.
        stream: Iterator of ``{"pixel_values": uint8 (B, 3, tile, tile), ...}`` batches.
        catalogue_skipped: Slides of the catalogues given that were left out, by status (never opened).
    """

    readable: list
    failed: list
    my_slides: list
    stream: TileBatchStream
    catalogue_skipped: dict[str, int] = field(default_factory=dict)


def slide_options(d_args: DINODataArguments) -> dict:
    """The reading and tissue-mask options (``--mpp_override``, ``--default_mpp``, ``--icc_profile``,
    ``--min_object_um2``, ``--saturation_floor``, ``--mask_mpp``, ``--mask_cache_dir``)."""
    return {
        "mpp_override": d_args.mpp_override,
        "default_mpp": d_args.default_mpp,
        "icc_profile": d_args.icc_profile,
        "min_object_um2": d_args.min_object_um2,
        "saturation_floor": d_args.saturation_floor,
        "mask_mpp": d_args.mask_mpp,
        "mask_cache_dir": d_args.mask_cache_dir,
    }


@contextmanager
def warnings_on_rank_zero(rank: int) -> Iterator[None]:
    """Every rank resolves and opens the same slides at start-up: only rank 0 logs what it skips and warns
    of a manifest mpp the metadata contradicts (one line per slide, as for one process). The counts still
    reach every rank's start line; what a DataLoader worker skips later is its rank's own and is logged
    there."""
    package = logging.getLogger("pathfm")
    level = package.level
    with warnings.catch_warnings():
        if rank != 0:
            package.setLevel(logging.ERROR)
            warnings.simplefilter("ignore", MppDisagreementWarning)
        try:
            yield
        finally:
            package.setLevel(level)


def make_mask_cache_dir(folder: str) -> None:
    """Create ``--mask_cache_dir`` before any DataLoader worker needs it.

    Raises:
        ValueError: it cannot be created (the folder and the reason named), rather than each worker failing.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"--mask_cache_dir {folder}: cannot create it ({err.strerror or err}); give a writable folder"
        ) from None


def build_data(
    d_args: DINODataArguments, t_args: DINOTrainingArguments, rank: int, world_size: int
) -> RunData:
    """Resolve and open the slides, give this rank its share, and start its tile stream.

    Raises:
        ValueError: No slide, none readable, or fewer slides than processes.
    """
    mpp_given = d_args.mpp_override is not None or d_args.default_mpp is not None
    if d_args.mask_cache_dir:
        make_mask_cache_dir(d_args.mask_cache_dir)
    with warnings_on_rank_zero(rank):
        records = resolve_slides(d_args.slides, mpp_given)
        # no readable slide -> ValueError before training
        readable, failed = preflight_slides(records, d_args.mpp_override, d_args.default_mpp, d_args.reader)
    my_slides = partition_slides(readable, rank, world_size)
    stream = TileBatchStream(
        my_slides,
        batch_size=t_args.per_device_batch_size,
        seed=t_args.seed * 1000 + rank,
        mpps=d_args.mpps,
        tile_size=d_args.tile_size,
        min_tissue=d_args.min_tissue,
        tiles_per_slide=d_args.tiles_per_slide,
        num_workers=d_args.num_workers,
        **slide_options(d_args),
        reader=d_args.reader,
        reader_threads=d_args.reader_threads,
    )
    return RunData(readable, failed, my_slides, stream, dict(catalogue_skips(d_args.slides, mpp_given)))


def probe_pixels(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic RankMe view: uint8 tiles (B, 3, H, W) -> (B, 3, size, size) resized, in [-1, 1]."""
    x = torch.nn.functional.interpolate(
        tiles.float() / 255.0, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return (x - 0.5) / 0.5


def build_probe(
    readable: list, d_args: DINODataArguments, t_args: DINOTrainingArguments, device: torch.device
) -> torch.Tensor | None:
    """Fixed RankMe probe batch (B, 3, global_crop_size, global_crop_size), or None if ``probe_size`` is 0.

    It has its own seeded stream so it never touches the training RNG. The stream interleaves the slides, so
    the batch mixes them even though any one slide may give all of it (``tiles_per_slide = probe_size``): a
    slide that fails to open (moved since the catalogue was built, corrupt) costs the probe nothing. The probe
    is a diagnostic: when the slides cannot fill it, it is turned off with a warning, and the training
    stream says what is wrong with them.
    """
    if t_args.probe_size <= 0:
        return None
    probe_stream = TileBatchStream(
        readable,
        t_args.probe_size,
        seed=t_args.seed + 777_777,
        mpps=d_args.mpps,
        tile_size=d_args.tile_size,
        min_tissue=d_args.min_tissue,
        tiles_per_slide=t_args.probe_size,
        **slide_options(d_args),
    )
    try:
        pixels = next(probe_stream)["pixel_values"]
    except EmptyTileStreamError as err:
        logger.warning("RankMe probe off (--probe_size %d): %s", t_args.probe_size, err)
        return None
    finally:
        probe_stream.close()
    return probe_pixels(pixels, d_args.global_crop_size).to(device)
