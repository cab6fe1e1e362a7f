"""Per-rank, endless, resumable stream of uint8 tile batches for DINO.

One job: turn the configured slide sources into batches of ``pixel_values`` uint8 (B, 3, H, W) for *this*
process, with a state that a checkpoint can hold.

- Sources are resolved to ``SlideRecord``s (files, folders, manifests, catalogues, or ``embedded``) and every
  slide not from a catalogue is opened once before training (``preflight_slides``): unreadable slides are
  skipped and counted; none readable -> ``ValueError`` before any training step. A catalogue run opens no slide
  before the first batch (each DataLoader worker opens its own slides lazily).
- Each rank gets its own slides, ``records[rank::world_size]`` (round robin over the sorted list), and reads
  only those: ``tile_stream`` is then called with ``rank=0, world_size=1`` so no second sharding happens and
  no rank reads tiles that another rank keeps.
- The stream runs in *passes*: pass ``p`` is ``tile_stream(SlideTilesConfig(..., seed=seed_rank, epoch=p))``
  (``tiles_per_slide`` random tiles per slide, re-seeded each pass); when a pass ends the next one starts.
- State = (pass, batches consumed in the pass, counters, skip counters of finished passes). Resuming
  rebuilds the pass and skips the consumed batches, which re-reads those tiles (cost: at most one pass of this
  rank's tiles). The DataLoader gets its own ``torch.Generator`` so building an iterator never consumes the
  global RNG (which drives augmentation and drop path, and is restored by ``Accelerator.load_state``).
- Why not torchdata's ``StatefulDataLoader`` (or accelerate's ``use_stateful_dataloader``, which needs it): it
  does work with the stream's ``state_dict`` (tried with torchdata 0.11: 2 workers, a JSON state of ~1.5 KB,
  the next batches equal) and would resume without re-reading pixels, but ``datasets`` resumes by replaying
  only the coordinate generator, not the ``.map`` that reads pixels, and the generator drops a slide after
  ``max_region_failures`` failures counted in that ``.map``. After a failed region a resumed stream would
  then yield other coordinates than the uninterrupted one (and restart its ``failed_regions`` count). An
  exact resume comes first; the replay costs at most one pass of this rank's tiles.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from pathfm.datasets_scripts.sources import SlideRecord, given_mpp_source

__all__ = ["resolve_slides", "preflight_slides", "partition_slides", "TileBatchStream"]

logger = logging.getLogger(__name__)

def resolve_slides(sources: Sequence[str], mpp_given: bool = False) -> list[SlideRecord]:
    """Turn slide sources into records, sorted by path (:func:`pathfm.datasets_scripts.resolve.resolve_sources`:
    slide files, folders, manifests, GDC manifests, catalogues ``.parquet``, or ``embedded``). ``mpp_given``
    (an ``--mpp_override`` / ``--default_mpp``) makes a catalogue's ``no-mpp`` rows usable.

    Raises:
        FileNotFoundError: A folder, manifest or catalogue that does not exist (named).
        ValueError: No slides found at all (the sources are listed).
    """
    from pathfm.datasets_scripts.resolve import resolve_sources

    return resolve_sources(list(sources), sort=True, mpp_given=mpp_given)


def preflight_slides(
    records: Sequence[SlideRecord],
    mpp_override: float | None = None,
    default_mpp: float | None = None,
    reader: str = "auto",
) -> tuple[list[SlideRecord], dict[str, str]]:
    """Open every slide once, with the pixel reader the stream will use; keep the usable ones. Slides from a
    catalogue were opened when it was built: they are kept without opening them (the stream's workers open
    them lazily, skipping and counting failures). A skipped slide is warned and classified as the stream and
    the catalogue do (:mod:`pathfm.datasets_scripts.skips`).

    Args:
        records: Candidate slides.
        mpp_override: Level-0 µm/px for every slide (``--mpp_override``).
        default_mpp: Level-0 µm/px for slides without one (``--default_mpp``).
        reader: ``--reader``: a slide that ``tiff`` cannot read is skipped here (and so counted in the start
            line's "skipped overall"), not only later in a DataLoader worker.

    Returns:
        ``(readable_records, failures)`` where ``failures`` maps a slide path to ``"<status>: <reason>"``
        (``no mpp: ...`` or ``unreadable: ...``).

    Raises:
        ValueError: If no slide is readable (every path and its error are listed).
    """
    from pathfm.datasets_scripts.skips import open_or_skip
    from pathfm.datasets_scripts.slide import open_slide

    ok: list[SlideRecord] = []
    failures: dict[str, str] = {}
    for rec in records:
        if rec.extra.get("catalogue"):
            ok.append(rec)
            continue
        mpp = mpp_override if mpp_override is not None else rec.mpp
        source = given_mpp_source(rec, mpp_override)
        opened, skip = open_or_skip(
            lambda: open_slide(rec.path, mpp=mpp, default_mpp=default_mpp, reader=reader, mpp_source=source),
            rec.slide_id,
            rec.path,
        )
        if skip is None:
            opened.close()
            ok.append(rec)
            continue
        failures[rec.path] = f"{skip.status.replace('-', ' ')}: {skip.reason}"
        logger.warning("%s", skip.message())
    if not ok:
        listing = "; ".join(f"{p}: {m}" for p, m in failures.items())
        raise ValueError(
            f"none of the {len(records)} slides is readable with an mpp, nothing to train on: {listing}"
        )
    return ok, failures


def partition_slides(records: Sequence[SlideRecord], rank: int, world_size: int) -> list[SlideRecord]:
    """This rank's slides: ``records[rank::world_size]``.

    Raises:
        ValueError: If there are fewer slides than processes (a rank would have nothing to read).
    """
    if len(records) < world_size:
        raise ValueError(
            f"{len(records)} readable slides for {world_size} processes: every process needs at "
            f"least one slide of its own"
        )
    return list(records[rank::world_size])



def leave_stop_signals_to_main(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT and SIGTERM.

    Ctrl-C in a terminal and SLURM's SIGTERM before a time limit reach the whole process group; a worker that
    died of it would make the main process raise "DataLoader worker ... killed by signal" instead of
    stopping cleanly at the next step with a checkpoint. Workers still exit when the main process does.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_WORKERS: weakref.WeakSet[multiprocessing.Process] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []  # [True] once _end_workers_at_exit is registered


def _end_workers_at_exit() -> None:
    """Kill this process's tile workers still alive when it exits.

    multiprocessing's own exit hook stops daemonic children with SIGTERM, which the workers ignore
    (:func:`leave_stop_signals_to_main`), and then joins them: a run that ends on an exception while the
    traceback still holds its DataLoader iterator (so ``__del__`` has not stopped the workers) would wait
    forever. atexit runs its hooks last-registered first, so this one runs before multiprocessing's.
    """
    alive = [worker for worker in list(_WORKERS) if worker.is_alive()]
    if alive:
        # the DataLoader's SIGCHLD handler would report each kill as a worker failure while exiting
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for worker in alive:
            worker.kill()


def track_workers(started: set[multiprocessing.Process]) -> None:
    """Have :func:`_end_workers_at_exit` end ``started`` (DataLoader workers) if they outlive the process."""
    if started and not _EXIT_HOOK:  # once per process: every pass of the stream starts new workers
        atexit.register(_end_workers_at_exit)
        _EXIT_HOOK.append(True)
    _WORKERS.update(started)


# the stream's skip counters (builder.STAT_NAMES) -> what they mean for the run, and its fix
NO_BATCH_CAUSES = {
    "corrupt_slides": "{n} slide(s) unreadable or missing (named in the warnings above; check them with "
    "`pathfm catalogue`, or try --reader openslide)",
    "no_mpp_slides": "{n} slide(s) without an mpp: pass --default_mpp (or --mpp_override)",
    "unsupported_mpp_slides": "{n} slide(s) cannot serve any of --mpps without upsampling: give coarser "
    "--mpps",
    "no_tissue_slides": "{n} slide(s) with no tile of enough tissue: lower --min_tissue (or --tile_size)",
    "failed_regions": "{n} region(s) failed to decode: try --reader openslide",
}


def why_no_batch(stats: dict[str, int]) -> str:
    """Why a pass gave no batch, from its skip counters, each cause with its fix (``"; "``-joined)."""
    causes = [text.format(n=stats[name]) for name, text in NO_BATCH_CAUSES.items() if stats.get(name)]
    if causes:
        return "; ".join(causes)
    return (
        "its slides gave fewer tiles than one batch: raise --tiles_per_slide or lower --per_device_batch_size"
    )


class EmptyTileStreamError(ValueError):
    """The stream's slides gave no full batch in 3 passes (no tissue, or every region failed): a problem of
    the input slides, so the training CLI reports it as one line (a ``ValueError``) and exits with 2."""

class TileBatchStream:
    """Endless iterator of tile batches for one rank, with ``state_dict``/``load_state_dict``.

    Args:
        records: This rank's slides (see ``partition_slides``).
        batch_size: Tiles per batch.
        seed: Seed of this rank's tile sampler (pass ``p`` uses ``SlideTilesConfig(seed=seed, epoch=p)``).
        mpps: Magnifications (µm/px).
        tile_size: Tile side (px).
        min_tissue: Minimum tissue fraction.
        tiles_per_slide: Tiles per slide per pass.
        num_workers: DataLoader workers (read + decode only).
        mpp_override: Level-0 µm/px for every slide.
        default_mpp: Level-0 µm/px for slides whose metadata has none.
        icc_profile: ``"ignore"`` or ``"apply"`` embedded ICC profiles.
        reader, reader_threads: pixel reader and its decoder threads (``SlideTilesConfig.reader`` /
            ``reader_threads``).
        min_object_um2, saturation_floor, mask_mpp: tissue-mask settings (``SlideTilesConfig``; equal to the
            catalogue's, its stored masks are read back instead of computed).
        mask_cache_dir: folder for computed masks (``SlideTilesConfig.mask_cache_dir``), or None.
    """

    def __init__(
        self,
        records: Sequence[SlideRecord],
        batch_size: int,
        seed: int,
        mpps: Sequence[float],
        tile_size: int,
        min_tissue: float,
        tiles_per_slide: int,
        num_workers: int = 0,
        mpp_override: float | None = None,
        default_mpp: float | None = None,
        icc_profile: str = "ignore",
        reader: str = "auto",
        reader_threads: int = 1,
        min_object_um2: float = 10_000.0,
        saturation_floor: float = 20.0,
        mask_mpp: float = 8.0,
        mask_cache_dir: str | None = None,
    ) -> None:
        self.records = list(records)
        self.mask_options = {
            "min_object_um2": min_object_um2, "saturation_floor": saturation_floor, "mask_mpp": mask_mpp,
            "mask_cache_dir": mask_cache_dir,
        }
        self.mpp_override, self.default_mpp, self.icc_profile = mpp_override, default_mpp, icc_profile
        self.reader = reader
        self.reader_threads = reader_threads
        self.batch_size = batch_size
        self.seed = seed
        self.mpps = [float(m) for m in mpps]
        self.tile_size = tile_size
        self.min_tissue = min_tissue
        self.tiles_per_slide = tiles_per_slide
        self.num_workers = num_workers
        self.pass_index = 0
        self.batches_in_pass = 0
        self.tiles_seen = 0
        self.slide_counts: Counter[str] = Counter()
        self.mpp_counts: Counter[str] = Counter()
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._empty_passes = 0
        self._empty_stats: Counter[str] = Counter()  # skip counters of the empty passes in a row (max of each)
        self._ds = None  # the current pass's datasets.IterableDataset (for its skip counters)
        self._stats_done: Counter[str] = Counter()  # skip counters of finished passes

    # ----------------------------------------------------------------------------------------- building
    def _dataset(self, pass_index: int):
        from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream

        config = SlideTilesConfig(
            slides=self.records,
            mpps=tuple(self.mpps),
            tile_size=self.tile_size,
            min_tissue=self.min_tissue,
            sampler="random",
            tiles_per_slide=self.tiles_per_slide,
            seed=self.seed,
            epoch=pass_index,
            mpp_override=self.mpp_override,
            default_mpp=self.default_mpp,
            icc_profile=self.icc_profile,
            reader=self.reader,
            reader_threads=self.reader_threads,
            **self.mask_options,
        )
        # This rank's slides are already partitioned: no second split by node.
        self._ds = tile_stream(config, rank=0, world_size=1, num_workers=self.num_workers)
        return self._ds

    def _make_iterator(self, pass_index: int, skip_batches: int) -> Iterator[dict[str, Any]]:
        from pathfm.datasets_scripts.builder import collate_tiles

        loader = DataLoader(
            self._dataset(pass_index),
            batch_size=self.batch_size,
            collate_fn=collate_tiles,
            num_workers=self.num_workers,
            drop_last=True,
            # own generator: creating an iterator must not advance the global (augmentation) RNG
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index),
            persistent_workers=False,
            worker_init_fn=leave_stop_signals_to_main,
            # page-locked batches: the host-to-GPU copy (non_blocking) overlaps with compute
            pin_memory=torch.cuda.is_available(),
        )
        before = set(multiprocessing.active_children())
        iterator = iter(loader)
        track_workers(set(multiprocessing.active_children()) - before)
        for _ in range(skip_batches):
            next(iterator)
        return iterator

    # ----------------------------------------------------------------------------------------- iteration
    def __iter__(self) -> TileBatchStream:
        return self

    def __next__(self) -> dict[str, Any]:
        """Next batch: ``pixel_values`` uint8 (B, 3, H, W) plus metadata lists (``slide_id``, ``mpp``...)."""
        while True:
            if self._iterator is None:
                self._iterator = self._make_iterator(self.pass_index, self.batches_in_pass)
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.batches_in_pass == 0:
                    self._empty_passes += 1
                    # the most of each over the empty passes: a slide whose regions failed in the first one is
                    # dropped unread in the next (counted as unreadable there, without failed regions)
                    for name, n in self._current_stats().items():
                        self._empty_stats[name] = max(self._empty_stats[name], n)
                    if self._empty_passes >= 3:
                        raise EmptyTileStreamError(
                            f"the tile stream of slides {[r.slide_id for r in self.records]} produced no full "
                            f"batch of {self.batch_size} in 3 passes: {why_no_batch(self._empty_stats)}"
                        ) from None
                self._stats_done.update(self._current_stats())
                self._ds = None
                self.pass_index += 1
                self.batches_in_pass = 0
                self._iterator = None
                continue
            self._empty_passes, self._empty_stats = 0, Counter()
            self.batches_in_pass += 1
            self.tiles_seen += len(batch["slide_id"])
            self.slide_counts.update(str(s) for s in batch["slide_id"])
            if "mpp" in batch:
                self.mpp_counts.update(f"{float(m):g}" for m in batch["mpp"])
            return batch

    def _current_stats(self) -> dict[str, int]:
        if self._ds is None:
            return {}
        from pathfm.datasets_scripts.builder import stream_stats

        return stream_stats(self._ds)

    def stats(self) -> dict[str, int]:
        """Slide counters of the builder summed over passes (``corrupt_slides``, ``no_tissue_slides``, ...).

        Slides that fail mid-run are skipped by the builder and counted here (per rank).
        """
        total = Counter(self._stats_done)
        total.update(self._current_stats())
        return dict(total)

    def close(self) -> None:
        """Drop the current DataLoader iterator (stops its workers)."""
        self._iterator = None

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position of the stream and its counters."""
        return {
            "pass_index": self.pass_index,
            "batches_in_pass": self.batches_in_pass,
            "tiles_seen": self.tiles_seen,
            "slide_counts": dict(self.slide_counts),
            "mpp_counts": dict(self.mpp_counts),
            "seed": self.seed,
            "slides": [r.slide_id for r in self.records],
            "skip_stats": self.stats(),
            # finished passes only: resuming replays the current pass, which counts its own skips again
            "skip_stats_done": dict(self._stats_done),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by ``state_dict``; the next batch is the one after it.

        The skip counters of finished passes are restored; those of the current pass are counted again as it
        is replayed up to the saved position, so :meth:`stats` continues where the saved run was.

        Raises:
            ValueError: If the saved stream belongs to other slides or another seed.
        """
        if state.get("slides") != [r.slide_id for r in self.records] or state.get("seed") != self.seed:
            raise ValueError(
                f"data-stream state is for slides {state.get('slides')} / seed {state.get('seed')}, "
                f"this run has "
                f"{[r.slide_id for r in self.records]} / {self.seed}: resume with the same slides, seed and "
                f"number of processes"
            )
        self.pass_index = int(state["pass_index"])
        self.batches_in_pass = int(state["batches_in_pass"])
        self.tiles_seen = int(state["tiles_seen"])
        self.slide_counts = Counter(state.get("slide_counts", {}))
        self.mpp_counts = Counter(state.get("mpp_counts", {}))
        self._stats_done = Counter(state.get("skip_stats_done", {}))
        self._ds = None
        self._iterator = None
