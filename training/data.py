"""The data step of a run: slides -> this rank's stream of uint8 tile batches, and a fixed probe batch.

The stream itself is ``tile_batches.TileBatchStream``; this module only decides which slides each rank reads,
its seed, and the RankMe probe tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pathfm.datasets_scripts.resolve import catalogue_skips
from pathfm.training.config import DINODataArguments, DINOTrainingArguments
from pathfm.training.tile_batches import TileBatchStream, partition_slides, preflight_slides, resolve_slides


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
    """The reading options of ``--mpp_override``, ``--default_mpp`` and ``--icc_profile``."""
    return {
        "mpp_override": d_args.mpp_override,
        "default_mpp": d_args.default_mpp,
        "icc_profile": d_args.icc_profile,
    }


def build_data(
    d_args: DINODataArguments, t_args: DINOTrainingArguments, rank: int, world_size: int
) -> RunData:
    """Resolve and open the slides, give this rank its share, and start its tile stream.

    Raises:
        ValueError: No slide, none readable, or fewer slides than processes.
    """
    records = resolve_slides(d_args.slides)
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
    return RunData(readable, failed, my_slides, stream, dict(catalogue_skips(d_args.slides)))


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

    It has its own seeded stream so it never touches the training RNG.
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
        tiles_per_slide=max(1, math.ceil(t_args.probe_size / len(readable))) + 1,
        **slide_options(d_args),
    )
    probe = probe_pixels(next(probe_stream)["pixel_values"], d_args.global_crop_size).to(device)
    probe_stream.close()
    return probe
