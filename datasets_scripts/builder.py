"""Online patching as a ``datasets`` stream: slides in, tissue-filtered multi-magnification tiles out.

:func:`tile_stream` builds an ordinary :class:`datasets.IterableDataset` from public pieces only:

* ``IterableDataset.from_generator`` over a list-valued ``gen_kwargs`` entry: one shard per *slide group*. The
  number of groups suits ranks x DataLoader workers (one group per consumer, a multiple of the world size), so
  ``split_dataset_by_node`` hands every rank whole, disjoint groups and no rank reads every slide;
* the generator (:func:`slide_tile_coords`) yields cheap tile *coordinates*: it opens a group's slides
  lazily, at most ``max_open_slides`` at a time, computes their tissue masks and draws positions, taking one
  tile from each open slide in turn so a batch mixes slides;
* ``.map(read_tile_pixels)`` reads the pixels (uint8 numpy arrays, never PNG-encoded) and ``.filter`` drops a
  region that failed to decode (counted; a slide failing ``max_region_failures`` times is dropped);
* so every ``datasets`` op chains on it: ``shuffle(seed, buffer_size)``, ``map``, ``filter``,
  ``take``/``skip``, ``batch``, ``with_format("torch")``, ``set_epoch``, ``split_dataset_by_node``, DataLoader workers, and
  ``state_dict()``/``load_state_dict()`` (datasets' own resume re-runs the generator and skips coordinates, so
  a resumed stream reads no pixels for what it skips).

The random sampler's tiles of slide i depend only on (seed, epoch, i), never on how slides were grouped or
spread over workers and ranks. ``set_epoch`` has the ``datasets`` meaning (it reseeds ``shuffle``); the tile
positions change with ``SlideTilesConfig.epoch``. A corrupt or unreadable slide is skipped with a warning and
counted (:func:`stream_stats`); a slide with no tissue yields zero tiles and says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from pathfm.datasets_scripts.catalogue_masks import catalogue_mask, changed_since, mask_settings, read_row
from pathfm.datasets_scripts.colour import DEFAULT_ICC, check_icc_option
from pathfm.datasets_scripts.open_slides import SlidePool, slide_pool
from pathfm.datasets_scripts.samplers import GridTileSampler, RandomTileSampler
from pathfm.datasets_scripts.slide import DEFAULT_MPP_TOLERANCE, READERS, SlideError, SlideReader
from pathfm.datasets_scripts.resolve import resolve_sources, unique_slide_ids
from pathfm.datasets_scripts.skips import SlideSkip, open_or_skip, warn_skip
from pathfm.datasets_scripts.sources import SlideRecord, given_mpp_source
from pathfm.datasets_scripts.tissue import TissueMask, compute_tissue_mask

@dataclass
class SlideTilesConfig:
    """Configuration of :func:`tile_stream`.

    Attributes:
        slides: list of :class:`SlideRecord` or paths (slide files, folders, manifests), or one folder /
            CSV-TSV manifest path.
        mpps: magnifications (µm/px) the random sampler draws from uniformly (paper: 0.25, 0.5, 1, 2).
        tile_size: tile side in px.
        min_tissue: minimum tissue fraction of a tile (paper: 0.4).
        sampler: ``"random"`` (online patching, training) or ``"grid"`` (all tiles at ``grid_mpp``).
        tiles_per_slide: random sampler: tiles drawn from each slide per epoch.
        seed: base seed of the random sampler.
        epoch: epoch number mixed into the random sampler's seed (tiles change with the epoch).
        grid_mpp: grid sampler µm/px.
        grid_stride: grid step in px at ``grid_mpp`` (default ``tile_size``).
        grid_partial: grid tiles crossing the slide edge: ``"pad"`` (background fill), ``"drop"`` or ``"keep"``
            (moved inward to end at the edge); see :class:`GridTileSampler`.
        mask_mpp: tissue-mask resolution, µm/px.
        saturation_floor: the most saturated glass can be, and the threshold when there is no glass (0-255;
            :func:`pathfm.datasets_scripts.tissue.tissue_mask_from_rgb`).
        min_object_um2: smallest tissue piece kept in the mask, µm² (lower it for needle biopsies / TMA cores).
        max_open_slides: slides open at once per worker (the random sampler's interleaving width and the
            size of the worker's LRU pool of open slides).
        mpp_tolerance: relative mpp tolerance (level choice, refusing to upsample).
        mask_cache_dir: optional folder for cached tissue masks (.npz).
        image_encoding: ``"array"`` (uint8 numpy, ``Array3D``: no codec on the hot path) or ``"png"``
            (``datasets.Image``: PIL images; compact parquet for fixed datasets).
        max_region_failures: failed region reads after which a slide is dropped (each failure is counted in
            ``failed_regions`` and costs that tile only).
        mpp_override: level-0 µm/px for every slide (wins over manifest / catalogue values and metadata).
        default_mpp: level-0 µm/px for slides whose metadata has none (:mod:`pathfm.datasets_scripts.mpp`).
        icc_profile: ``"ignore"`` (default) or ``"apply"`` embedded ICC profiles (:mod:`.colour`).
        reader: pixel reader, ``"auto"`` (stored JPEG tiles of TIFF/SVS pyramids decoded directly, OpenSlide
            for everything else), ``"tiff"`` (the fast reader or an error naming why not) or ``"openslide"``
            (the reference); see :data:`pathfm.datasets_scripts.slide.READERS`.
        reader_threads: decoder threads per region inside one worker (``auto`` / ``tiff``).
    """

    slides: Any = None
    mpps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    tile_size: int = 256
    min_tissue: float = 0.4
    sampler: str = "random"
    tiles_per_slide: int = 64
    seed: int = 0
    epoch: int = 0
    grid_mpp: float = 0.5
    grid_stride: int | None = None
    grid_partial: str = "pad"
    mask_mpp: float = 8.0
    saturation_floor: float = 20.0
    min_object_um2: float = 10_000.0
    max_open_slides: int = 8
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    mask_cache_dir: str | None = None
    image_encoding: str = "array"
    max_region_failures: int = 3
    mpp_override: float | None = None
    default_mpp: float | None = None
    icc_profile: str = DEFAULT_ICC
    reader: str = "auto"
    reader_threads: int = 1

    def __post_init__(self) -> None:
        if self.sampler not in ("random", "grid"):
            raise ValueError(f"sampler must be 'random' or 'grid', got {self.sampler!r}")
        if self.image_encoding not in ("array", "png"):
            raise ValueError(f"image_encoding must be 'array' or 'png', got {self.image_encoding!r}")
        if self.tile_size <= 0 or self.tiles_per_slide <= 0 or self.max_open_slides <= 0:
            raise ValueError("tile_size, tiles_per_slide and max_open_slides must be positive")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, got {self.reader!r}")
        if self.reader_threads <= 0:
            raise ValueError(f"reader_threads must be positive, got {self.reader_threads}")
        if self.max_region_failures <= 0:
            raise ValueError(f"max_region_failures must be positive, got {self.max_region_failures}")
        self.mpps = tuple(float(m) for m in self.mpps)
        check_icc_option(self.icc_profile)


def resolve_slides(spec: Any, mpp_given: bool = False) -> list[SlideRecord]:
    """Turn ``SlideTilesConfig.slides`` into records (:func:`pathfm.datasets_scripts.resolve.resolve_sources`;
    ``mpp_given``: an ``mpp_override`` or ``default_mpp`` is set, so a catalogue's ``no-mpp`` rows are usable).

    Raises:
        FileNotFoundError: a folder, manifest or catalogue that does not exist.
        ValueError: nothing given or no slides found.
    """
    return resolve_sources(spec, mpp_given=mpp_given)


def tile_features(tile_size: int, image_encoding: str = "array") -> datasets.Features:
    """The builder's features.

    Args:
        tile_size: tile side in px.
        image_encoding: ``"array"`` -> ``Array3D((T, T, 3), uint8)``; ``"png"`` -> ``Image()``.
    """
    image = (
        datasets.Array3D(shape=(tile_size, tile_size, 3), dtype="uint8")
        if image_encoding == "array"
        else datasets.Image()
    )
    return datasets.Features(
        {
            "image": image,
            "slide_id": datasets.Value("string"),
            "x": datasets.Value("int64"),
            "y": datasets.Value("int64"),
            "mpp": datasets.Value("float32"),
            "level": datasets.Value("int32"),
            "tissue_fraction": datasets.Value("float32"),
        }
    )


def coord_features() -> datasets.Features:
    """Features of the coordinate generator (before pixels are read)."""
    return datasets.Features(
        {
            "path": datasets.Value("string"),
            "slide_mpp": datasets.Value("float64"),  # level-0 mpp override of the record, or None
            "slide_id": datasets.Value("string"),
            "x": datasets.Value("int64"),
            "y": datasets.Value("int64"),
            "mpp": datasets.Value("float32"),
            "level": datasets.Value("int32"),
            "tile_size": datasets.Value("int32"),
            "tissue_fraction": datasets.Value("float32"),
        }
    )


COORD_ONLY_COLUMNS = ["path", "slide_mpp", "tile_size"]

# ----------------------------------------------------------------------------------------------------- counters
STAT_NAMES = (
    "slides_done",
    "corrupt_slides",
    "no_mpp_slides",
    "no_tissue_slides",
    "unsupported_mpp_slides",
    "failed_regions",
    "masks_from_catalogue",
    "changed_slides",
)


class SlideStats:
    """Per-stream counters shared with DataLoader workers (a torch tensor in shared memory).

    ``corrupt_slides``: could not be opened or read (includes missing files), or dropped after
    ``max_region_failures`` failed regions; ``no_mpp_slides``: no level-0 mpp anywhere in the chain (and no
    ``default_mpp``), or non-square pixels; ``no_tissue_slides``: empty tissue mask or no tile passing the
    threshold; ``unsupported_mpp_slides``: none of the requested magnifications is servable without upsampling;
    ``failed_regions``: tiles whose region failed to decode (skipped); ``masks_from_catalogue``: slides whose
    tissue mask was read back from their catalogue row instead of computed; ``changed_slides``: catalogued
    slides whose file changed since the catalogue was built (read with their own mpp, mask computed).
    Increments from different workers are not atomic; they are rare events (per slide or per failure), so
    collisions are practically impossible.
    """

    def __init__(self) -> None:
        import torch

        self.values = torch.zeros(len(STAT_NAMES), dtype=torch.int64).share_memory_()

    def add(self, name: str, n: int = 1) -> None:
        """Increment counter ``name``."""
        self.values[STAT_NAMES.index(name)] += n

    def as_dict(self) -> dict[str, int]:
        """Counter values."""
        return {k: int(v) for k, v in zip(STAT_NAMES, self.values.tolist())}


_STREAM_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stream_stats(ds: datasets.IterableDataset) -> dict[str, int]:
    """Skip counters of a stream returned by :func:`tile_stream`.

    Args:
        ds: the IterableDataset :func:`tile_stream` returned (derived datasets share the counters but are not
            registered: keep the returned object, or pass your own ``stats`` to :func:`tile_stream`).

    Returns:
        ``{name: count}`` for :data:`STAT_NAMES`, summed over this process and its DataLoader workers.

    Raises:
        ValueError: ``ds`` was not returned by :func:`tile_stream`.
    """
    stats = _STREAM_STATS.get(ds)
    if stats is None:
        raise ValueError("not a stream returned by tile_stream(): keep that object or pass stats=SlideStats()")
    return stats.as_dict()


# ----------------------------------------------------------------------------------------------- coordinates
def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def open_slide_for_tiles(
    index: int, rec: SlideRecord, config: SlideTilesConfig, stats: SlideStats, pool: SlidePool
) -> tuple[SlideReader, TissueMask] | None:
    """Open slide ``rec`` from the worker's pool and get its mask (read back from the record's catalogue row
    when that row still matches, :mod:`.catalogue_masks`, else computed); None (warned and counted by
    :func:`pathfm.datasets_scripts.skips.warn_skip`, as training's start-up check and the catalogue do) when
    unusable. A catalogued slide whose file changed since (size, mtime) is warned and counted
    (``changed_slides``) and read with its own metadata's mpp, not the catalogued one."""
    stored = None
    if rec.extra.get("catalogue"):
        try:
            stored = read_row(rec.extra["catalogue"], rec.extra["catalogue_row"])
        except (OSError, ValueError, IndexError):  # the catalogue moved or was rewritten since the start
            stored = None
        changed = changed_since(stored, rec.path)
        if changed:
            stats.add("changed_slides")
            _warn(
                f"slide {rec.slide_id} ({rec.path}) changed since {rec.extra['catalogue']} was built "
                f"({changed}): its catalogued mpp and tissue mask are not used; rebuild the catalogue (only "
                "changed slides are reopened)"
            )
            rec.mpp, stored = config.mpp_override, None
    source = given_mpp_source(rec, config.mpp_override)
    reader, skip = open_or_skip(
        lambda: pool.get(
            rec.path, mpp=rec.mpp, mpp_tolerance=config.mpp_tolerance, mpp_source=source,
            **reader_options(config),
        ),  # fmt: skip
        rec.slide_id,
        rec.path,
    )
    if skip is not None:
        warn_skip(skip, stats)
        return None
    if stored is not None:
        settings = mask_settings(
            config.mask_mpp, config.saturation_floor, min_object_um2=config.min_object_um2,
            icc_profile=config.icc_profile,
        )  # fmt: skip
        mask = catalogue_mask(stored, reader, settings)
        if mask is not None:
            stats.add("masks_from_catalogue")
            return reader, mask
    try:
        mask = compute_tissue_mask(
            reader,
            mask_mpp=config.mask_mpp,
            saturation_floor=config.saturation_floor,
            min_object_um2=config.min_object_um2,
            cache_dir=config.mask_cache_dir,
        )
    except (SlideError, ValueError) as err:
        pool.release(rec.path)
        warn_skip(SlideSkip(rec.slide_id, rec.path, "unreadable", f"tissue mask failed: {err}"), stats)
        return None
    return reader, mask


def slide_coords(
    index: int, rec: SlideRecord, reader: SlideReader, mask: TissueMask, config: SlideTilesConfig,
    stats: SlideStats,
) -> Iterator:
    """The tile coordinates of slide ``index`` (deterministic in (seed, epoch, index)); empty after warning."""
    cfg = config
    if cfg.sampler == "grid":
        if not reader.supports_mpp(cfg.grid_mpp):
            reason = f"grid mpp {cfg.grid_mpp} is finer than its native {reader.mpp:.4g} µm/px; 0 tiles"
            warn_skip(SlideSkip(rec.slide_id, rec.path, "unsupported-mpp", reason), stats)
            return iter(())
        grid = GridTileSampler(cfg.grid_mpp, cfg.tile_size, cfg.grid_stride, cfg.min_tissue, cfg.grid_partial)
        tiles = grid.tiles(reader, mask)
        if not tiles:
            reason = (
                f"no grid tile has >= {cfg.min_tissue:.0%} tissue (tissue mask: {mask.tissue_pixels} px); "
                "0 tiles"
            )
            warn_skip(SlideSkip(rec.slide_id, rec.path, "no-tissue", reason), stats)
        return iter(tiles)
    sampler = RandomTileSampler(cfg.mpps, cfg.tile_size, cfg.min_tissue)
    if not sampler.allowed_mpps(reader):
        reason = f"none of mpps {cfg.mpps} is servable from native {reader.mpp:.4g} µm/px; 0 tiles"
        warn_skip(SlideSkip(rec.slide_id, rec.path, "unsupported-mpp", reason), stats)
        return iter(())
    if mask.tissue_pixels == 0:
        reason = f"no tissue found (saturation threshold {mask.threshold:.1f}); 0 tiles"
        warn_skip(SlideSkip(rec.slide_id, rec.path, "no-tissue", reason), stats)
        return iter(())
    rng = np.random.default_rng([int(cfg.seed), int(cfg.epoch), int(index)])
    return LimitedTiles(sampler.iter_tiles(reader, mask, rng), cfg.tiles_per_slide, rec, stats)


class LimitedTiles:
    """At most ``n`` items of a sampler stream; warns when a slide runs out of acceptable positions early."""

    def __init__(self, it: Iterator, n: int, rec: SlideRecord, stats: SlideStats) -> None:
        self.it, self.left, self.rec, self.stats, self.got = it, n, rec, stats, 0

    def __iter__(self) -> LimitedTiles:
        return self

    def __next__(self) -> Any:
        if self.left <= 0:
            raise StopIteration
        try:
            item = next(self.it)
        except StopIteration:
            if self.got == 0:
                reason = "no position with enough tissue; 0 tiles"
                warn_skip(SlideSkip(self.rec.slide_id, self.rec.path, "no-tissue", reason), self.stats)
            raise
        self.left -= 1
        self.got += 1
        return item


def slide_tile_coords(groups: list[bytes], config: SlideTilesConfig, stats: SlideStats) -> Iterator[dict]:
    """Generator of one shard: the tile coordinates of a group of slides, interleaved.

    Args:
        groups: the shard's slice of the list-valued ``gen_kwargs`` entry (``datasets`` passes one group per
            shard), each group encoded by :func:`encode_group`.
        config: stream config (``max_open_slides`` slides are interleaved, one tile each in turn).
        stats: shared counters.

    Yields:
        coordinate examples (see :func:`coord_features`); no pixels are read here.
    """
    columns = decode_groups(groups)
    pool = slide_pool(config.max_open_slides)
    width = 1 if config.sampler == "grid" else config.max_open_slides
    active: list[tuple[SlideRecord, Iterator]] = []
    nxt = cursor = 0
    try:
        while True:
            while len(active) < width and nxt < len(columns[0]):
                index, path, slide_id, mpp, catalogue, row = (column[nxt] for column in columns)
                extra = {"catalogue": catalogue, "catalogue_row": row} if catalogue else {}
                rec = SlideRecord(path=path, slide_id=slide_id, mpp=mpp, extra=extra)
                nxt += 1
                opened = open_slide_for_tiles(index, rec, config, stats, pool)
                if opened is not None:
                    active.append((rec, slide_coords(index, rec, *opened, config, stats)))
            if not active:
                return
            cursor %= len(active)
            rec, coords = active[cursor]
            failures = pool.region_failures.get(rec.path, 0)
            coord = next(coords, None) if failures < config.max_region_failures else None
            if coord is None:
                if failures >= config.max_region_failures:
                    reason = f"dropped: {failures} regions failed to decode (check it: `pathfm catalogue`)"
                    warn_skip(SlideSkip(rec.slide_id, rec.path, "unreadable", reason), stats)
                else:
                    stats.add("slides_done")
                pool.release(rec.path)
                active.pop(cursor)
                continue
            cursor += 1
            yield {
                "path": rec.path,
                "slide_mpp": rec.mpp,
                "slide_id": rec.slide_id,
                "x": coord.x,
                "y": coord.y,
                "mpp": coord.mpp,
                "level": coord.level,
                "tile_size": coord.tile_size,
                "tissue_fraction": coord.tissue_fraction,
            }
    finally:
        for rec, _ in active:
            pool.release(rec.path)


def reader_options(config: SlideTilesConfig) -> dict:
    """:meth:`SlidePool.get` keyword arguments besides the path, mpp and tolerance: the pixel reader of
    ``config``, its default mpp and its ICC option."""
    return {
        "reader_kind": config.reader,
        "threads": config.reader_threads,
        "default_mpp": config.default_mpp,
        "icc_profile": config.icc_profile,
    }


def read_tile_pixels(example: dict, config: SlideTilesConfig, stats: SlideStats) -> dict:
    """``.map()`` function: read the tile of a coordinate example.

    Returns:
        ``{"image": uint8 (T, T, 3) array}`` (a PIL image for ``image_encoding="png"``), or ``{"image": None}``
        when the region failed to decode (warned, counted in ``failed_regions``; :func:`has_image` drops it).
    """
    pool = slide_pool(config.max_open_slides)
    try:
        reader = pool.get(
            example["path"], mpp=example["slide_mpp"], mpp_tolerance=config.mpp_tolerance,
            **reader_options(config),
        )
        tile = reader.read_tile(example["x"], example["y"], example["tile_size"], example["mpp"])
    except SlideError as err:
        n = pool.failed(example["path"])
        stats.add("failed_regions")
        _warn(
            f"slide {example['slide_id']}: tile at ({example['x']}, {example['y']}) failed to read, skipped "
            f"(failure {n} of at most {config.max_region_failures}): {err}"
        )
        return {"image": None}
    if config.image_encoding == "png":
        from PIL import Image

        return {"image": Image.fromarray(tile)}
    return {"image": tile}


def has_image(example: dict) -> bool:
    """``.filter()`` predicate: the tile's pixels were read."""
    return example["image"] is not None


# ------------------------------------------------------------------------------------------------- the stream
def _pack(strings: list[str]) -> str | list[str]:
    """One NUL-separated string (pickled ~10x faster than 30,000 small ones); the list itself if a string
    holds a NUL (no path can; a manifest's slide id could)."""
    joined = "\0".join(strings)
    return joined if strings and joined.count("\0") == len(strings) - 1 else strings


def _unpack(packed: str | list[str]) -> list[str]:
    return packed.split("\0") if isinstance(packed, str) else packed


def encode_group(records: list[SlideRecord], indices: range, mpp_override: float | None = None) -> bytes:
    """Slides ``records[i] for i in indices`` as one pickled list of six columns (index, path, slide_id, mpp,
    catalogue path or "", catalogue row or -1).

    ``datasets`` fingerprints ``gen_kwargs`` by pickling them: one bytes object per group keeps that cheap for
    30,000 slides (records as objects take seconds). Columns of plain strings and numbers, rather than one
    small list per slide, also keep start-up from triggering full garbage collections, whose cost grows with the
    whole heap (torch, datasets), not with the slides. Pickle, with the paths and ids each joined into one
    string, rather than JSON: both directions take ~10 rather than ~30 ms for 30,000 slides, all of it before
    the first batch. The bytes never leave the job (the DataLoader pickles its dataset to its workers the same
    way). ``mpp_override`` replaces every record's mpp.
    """
    chosen = records[indices.start : indices.stop : indices.step]
    extras = [r.extra for r in chosen]
    mpps = [r.mpp for r in chosen] if mpp_override is None else [float(mpp_override)] * len(chosen)
    return pickle.dumps(
        [(indices.start, indices.stop, indices.step), _pack([r.path for r in chosen]),
         _pack([r.slide_id for r in chosen]), mpps, [e.get("catalogue", "") for e in extras],
         [e.get("catalogue_row", -1) for e in extras]],
        protocol=pickle.HIGHEST_PROTOCOL,
    )  # fmt: skip


def decode_groups(groups: list[bytes]) -> list[list]:
    """Inverse of :func:`encode_group` for one or more groups: the six columns, groups concatenated."""
    columns: list[list] = [[], [], [], [], [], []]
    for group in groups:
        span, paths, ids, *rest = pickle.loads(group)
        for column, values in zip(columns, [range(*span), _unpack(paths), _unpack(ids), *rest], strict=True):
            column.extend(values)
    return columns


def slide_groups(
    records: list[SlideRecord], world_size: int, num_workers: int, mpp_override: float | None = None
) -> list[bytes]:
    """Split slides into shards: one group per consumer (rank x worker), a multiple of ``world_size``.

    Slides are dealt round robin, so group sizes differ by at most one. With fewer slides than consumers there
    are fewer groups (a multiple of ``world_size`` when possible; every rank still gets whole slides); with
    fewer slides than ranks, one group per slide.

    Returns:
        groups of ``(global slide index, record)``, each encoded by :func:`encode_group`.
    """
    consumers = world_size * max(1, num_workers)
    n = len(records)
    if n >= consumers:
        n_groups = consumers
    elif n >= world_size:
        n_groups = n - n % world_size
    else:
        n_groups = n
    return [encode_group(records, range(g, n, n_groups), mpp_override) for g in range(n_groups)]


def tile_stream(
    config: SlideTilesConfig,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    stats: SlideStats | None = None,
) -> datasets.IterableDataset:
    """The streaming tile dataset for one process of a (possibly distributed) job.

    Args:
        config: stream config.
        rank: this process's rank.
        world_size: number of processes.
        num_workers: DataLoader workers per process (sizes the slide groups: one per rank x worker).
        stats: counters to update (default: new ones, read back with :func:`stream_stats`).

    Returns:
        ``datasets.IterableDataset`` of ``{"image": uint8 (T, T, 3) | PIL.Image, "slide_id": str, "x": int,
        "y": int (level-0 px), "mpp": float (µm/px), "level": int, "tissue_fraction": float}``. With at least
        ``world_size`` slides every rank reads whole, disjoint slide groups (ranks may get one slide more than
        others: loop over a fixed number of steps); with fewer, every rank reads every slide and keeps 1 tile in
        ``world_size`` (``split_dataset_by_node``'s example strategy).

    Raises:
        ValueError: no slides (see :func:`resolve_slides`).
    """
    from datasets.distributed import split_dataset_by_node

    given = config.slides
    if isinstance(given, list) and given and all(map(isinstance, given, itertools.repeat(SlideRecord))):
        records = unique_slide_ids(list(given))  # already resolved (e.g. training's records): no second pass
    else:
        records = resolve_slides(given, config.mpp_override is not None or config.default_mpp is not None)
    stats = stats if stats is not None else SlideStats()
    config = dataclasses.replace(config, slides=None)  # the slides travel in the groups, hashed cheaply
    coords = datasets.IterableDataset.from_generator(
        slide_tile_coords,
        features=coord_features(),
        gen_kwargs={
            "groups": slide_groups(records, world_size, num_workers, config.mpp_override),
            "config": config,
            "stats": stats,
        },
    )
    if world_size > 1:
        coords = split_dataset_by_node(coords, rank=rank, world_size=world_size)
    ds = coords.map(
        read_tile_pixels,
        fn_kwargs={"config": config, "stats": stats},
        remove_columns=COORD_ONLY_COLUMNS,
        features=tile_features(config.tile_size, config.image_encoding),
    ).filter(has_image)
    _STREAM_STATS[ds] = stats
    return ds


def collate_tiles(examples: list[dict]) -> dict[str, Any]:
    """Collate tile examples into a batch.

    Args:
        examples: examples of :func:`tile_stream` (image uint8 (H, W, 3) numpy array or PIL image).

    Returns:
        {"pixel_values": uint8 tensor (B, 3, H, W), "slide_id": list[str], "x": list[int], "y": list[int],
        "mpp": list[float], "level": list[int], "tissue_fraction": list[float]}.
    """
    import torch

    if not examples:
        raise ValueError("collate_tiles got an empty list of examples")
    arrays = [
        e["image"] if isinstance(e["image"], np.ndarray) else np.asarray(e["image"].convert("RGB"))
        for e in examples
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    out: dict[str, Any] = {"pixel_values": batch}
    for k in ("slide_id", "x", "y", "mpp", "level", "tissue_fraction"):
        out[k] = [e[k] for e in examples]
    return out


__all__ = [
    "SlideStats",
    "SlideTilesConfig",
    "collate_tiles",
    "resolve_slides",
    "stream_stats",
    "tile_features",
    "tile_stream",
]
