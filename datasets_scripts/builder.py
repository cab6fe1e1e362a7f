"""Online patching as a ``datasets`` builder: slides in, tissue-filtered multi-magnification tiles out.

``SlideTiles`` is a :class:`datasets.GeneratorBasedBuilder` (datasets 5 has no dataset scripts, so the builder
is a class in our code) used through ``as_streaming_dataset()``:

* one shard per slide, so DataLoader workers and ranks (``split_dataset_by_node``) read disjoint slides;
* slides are opened lazily inside the worker, at most ``max_open_slides`` at a time; the random sampler keeps
  that many slides in a pool and takes one tile from each in turn, so a batch mixes slides;
* the random sampler's tiles for slide i depend only on (seed, epoch, i) (plus the shard-shuffle draw of
  ``IterableDataset.set_epoch``), never on how slides were spread over workers;
* a corrupt or unreadable slide is skipped with a warning and counted (:func:`stream_stats`); a slide with no
  tissue yields zero tiles and says so;
* ``state_dict()`` / ``load_state_dict()`` resume exactly (the pool, each slide's progress and the cursor are
  saved; a resumed slide re-draws and skips its already-emitted coordinates, reading no pixels for them).

Hot path: tiles are handed over as uint8 numpy arrays with no PNG encode/decode. The examples iterable is
"typed" (it already yields the decoded form of the declared features), so ``datasets`` does not run
``Features.encode_example`` / ``decode_example`` on it (``benchmarks/tiles.py`` measures the alternatives).
``image_encoding="png"`` declares ``datasets.Image()`` instead (yields PIL images), for fixed datasets written
with ``download_and_prepare`` and pushed to the Hub.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.builder import Key
from datasets.iterable_dataset import _BaseExamplesIterable
from pathfm.datasets_scripts.samplers import GridTileSampler, RandomTileSampler
from pathfm.datasets_scripts.slide import DEFAULT_MPP_TOLERANCE, SlideError, SlideReader, open_slide
from pathfm.datasets_scripts.sources import SlideRecord, find_slides, read_manifest
from pathfm.datasets_scripts.tissue import compute_tissue_mask

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class SlideTilesConfig(datasets.BuilderConfig):
    """Configuration of :class:`SlideTiles`.

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
        mask_mpp: tissue-mask resolution, µm/px.
        saturation_floor: floor of the Otsu saturation threshold (0-255).
        max_open_slides: slides open at once per worker (the random sampler's interleaving pool).
        mpp_tolerance: relative mpp tolerance (level choice, refusing to upsample).
        mask_cache_dir: optional folder for cached tissue masks (.npz).
        image_encoding: ``"array"`` (uint8 numpy, ``Array3D``: no codec on the hot path) or ``"png"``
            (``datasets.Image``: PIL images; compact parquet for fixed datasets).
    """

    name: str = "default"
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
    mask_mpp: float = 8.0
    saturation_floor: float = 20.0
    max_open_slides: int = 8
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    mask_cache_dir: str | None = None
    image_encoding: str = "array"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampler not in ("random", "grid"):
            raise ValueError(f"sampler must be 'random' or 'grid', got {self.sampler!r}")
        if self.image_encoding not in ("array", "png"):
            raise ValueError(f"image_encoding must be 'array' or 'png', got {self.image_encoding!r}")
        if self.tile_size <= 0 or self.tiles_per_slide <= 0 or self.max_open_slides <= 0:
            raise ValueError("tile_size, tiles_per_slide and max_open_slides must be positive")
        self.mpps = tuple(float(m) for m in self.mpps)


def resolve_slides(spec: Any) -> list[SlideRecord]:
    """Turn ``SlideTilesConfig.slides`` into records.

    Args:
        spec: a folder or manifest path, or a list of SlideRecord / slide paths / folders / manifests.

    Returns:
        records in a stable order (folder contents sorted).

    Raises:
        ValueError: nothing given, or an entry that is neither a record nor an existing path.
    """
    if spec is None:
        raise ValueError(
            "SlideTilesConfig.slides is empty: give slide paths, SlideRecords, a folder or a manifest"
        )
    items = [spec] if isinstance(spec, (str, os.PathLike, SlideRecord)) else list(spec)
    out: list[SlideRecord] = []
    for item in items:
        if isinstance(item, SlideRecord):
            out.append(item)
            continue
        if isinstance(item, dict):
            out.append(SlideRecord(**item))
            continue
        p = Path(item)
        if p.is_dir():
            out.extend(find_slides(p))
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            out.extend(read_manifest(p))
        else:
            # A slide path; existence is checked when the slide is opened (missing -> skipped and counted).
            out.append(SlideRecord(path=str(p)))
    if not out:
        raise ValueError(f"no slides found in {spec!r}")
    return out


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


# ----------------------------------------------------------------------------------------------------- counters
STAT_NAMES = ("slides_done", "corrupt_slides", "no_tissue_slides", "unsupported_mpp_slides")


class SlideStats:
    """Per-stream counters shared with DataLoader workers (a torch tensor in shared memory).

    ``corrupt_slides``: could not be opened or read (includes missing files and missing mpp);
    ``no_tissue_slides``: empty tissue mask or no tile passing the threshold;
    ``unsupported_mpp_slides``: none of the requested magnifications is servable without upsampling.
    Increments from different workers are not atomic; they happen once per slide, so collisions are
    practically impossible.
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


def _find_tiles_iterable(ex_iterable: Any) -> SlideTilesIterable | None:
    seen = 0
    while ex_iterable is not None and seen < 50:
        if isinstance(ex_iterable, SlideTilesIterable):
            return ex_iterable
        ex_iterable = getattr(ex_iterable, "ex_iterable", None)
        seen += 1
    return None


def stream_stats(ds: datasets.IterableDataset) -> dict[str, int]:
    """Skip counters of a stream made by :func:`tile_stream` / ``SlideTiles.as_streaming_dataset``.

    Args:
        ds: the IterableDataset (possibly wrapped by with_format / split_dataset_by_node).

    Returns:
        {"slides_done", "corrupt_slides", "no_tissue_slides", "unsupported_mpp_slides"} summed over this
        process and its DataLoader workers.
    """
    it = _find_tiles_iterable(ds._ex_iterable)
    if it is None:
        raise ValueError("not a SlideTiles stream")
    return it.stats.as_dict()


# ----------------------------------------------------------------------------------------------- the iterable
class SlideTilesIterable(_BaseExamplesIterable):
    """Examples iterable over slides (one shard = one slide) with an interleaving pool and exact resume.

    Args:
        records: all slides of the split (global order; a slide's index here seeds its sampler).
        indices: the global indices this iterable reads (a shard subset after worker/rank splitting).
        config: the builder config.
        features: declared features (the iterable yields their decoded form).
        stats: shared counters.
        epoch_token: extra seed material set by ``shuffle_data_sources`` (``IterableDataset.set_epoch``).
    """

    def __init__(
        self,
        records: Sequence[SlideRecord],
        indices: Sequence[int],
        config: SlideTilesConfig,
        features: datasets.Features,
        stats: SlideStats | None = None,
        epoch_token: int = 0,
    ) -> None:
        super().__init__()
        self.records = list(records)
        self.indices = list(indices)
        self.config = config
        self._features = features
        self.stats = stats if stats is not None else SlideStats()
        self.epoch_token = int(epoch_token)

    # -- datasets plumbing -----------------------------------------------------------------------------
    @property
    def is_typed(self) -> bool:
        return True

    @property
    def features(self) -> datasets.Features:
        return self._features

    @property
    def num_shards(self) -> int:
        return len(self.indices)

    def _with_indices(self, indices: Sequence[int], epoch_token: int | None = None) -> SlideTilesIterable:
        new = copy(self)
        new.indices = list(indices)
        new.epoch_token = self.epoch_token if epoch_token is None else int(epoch_token)
        new._state_dict = None
        return new

    def shard_data_sources(self, num_shards: int, index: int, contiguous: bool = True) -> SlideTilesIterable:
        """Keep the slides of worker/rank ``index`` out of ``num_shards``."""
        keep = self.split_shard_indices_by_worker(num_shards, index, contiguous=contiguous)
        return self._with_indices([self.indices[i] for i in keep])

    def shuffle_data_sources(self, generator: np.random.Generator) -> SlideTilesIterable:
        """Random sampler: permute the slide order and draw fresh seed material (``set_epoch``). Grid: no-op."""
        if self.config.sampler == "grid":
            return self
        generator = copy(generator)
        order = generator.permutation(len(self.indices))
        token = int(generator.integers(1, 2**31 - 1))
        return self._with_indices([self.indices[i] for i in order], epoch_token=token)

    def reshard_data_sources(self) -> SlideTilesIterable:
        return self

    def _init_state_dict(self) -> dict:
        # Only primitive values: datasets' generic state merging cannot grow lists, so the pool is a JSON string.
        self._state_dict = {"next": 0, "pool": "[]", "cursor": 0, "type": type(self).__name__}
        return self._state_dict

    def load_state_dict(self, state_dict: dict) -> dict:
        self._init_state_dict()
        self._state_dict.update({k: state_dict[k] for k in ("next", "pool", "cursor") if k in state_dict})
        return self._state_dict

    # -- slides ----------------------------------------------------------------------------------------
    def _open(self, index: int) -> tuple[SlideReader, Any] | None:
        """Open slide ``index`` and compute its mask; None (warned, counted) when it is unusable."""
        rec = self.records[index]
        cfg = self.config
        try:
            reader = open_slide(rec.path, mpp=rec.mpp, mpp_tolerance=cfg.mpp_tolerance)
        except SlideError as err:
            self.stats.add("corrupt_slides")
            warnings.warn(f"skipping slide {rec.slide_id}: {err}", RuntimeWarning, stacklevel=2)
            return None
        try:
            mask = compute_tissue_mask(
                reader,
                mask_mpp=cfg.mask_mpp,
                saturation_floor=cfg.saturation_floor,
                cache_dir=cfg.mask_cache_dir,
            )
        except (SlideError, ValueError) as err:
            reader.close()
            self.stats.add("corrupt_slides")
            warnings.warn(
                f"skipping slide {rec.slide_id}: tissue mask failed: {err}", RuntimeWarning, stacklevel=2
            )
            return None
        return reader, mask

    def _coords(self, index: int, reader: SlideReader, mask: Any) -> Iterator:
        """The slide's tile coordinates (deterministic), or None after warning when there are none."""
        cfg = self.config
        rec = self.records[index]
        if cfg.sampler == "grid":
            sampler = GridTileSampler(cfg.grid_mpp, cfg.tile_size, cfg.grid_stride, cfg.min_tissue)
            if not reader.supports_mpp(cfg.grid_mpp):
                self.stats.add("unsupported_mpp_slides")
                warnings.warn(
                    f"slide {rec.slide_id}: grid mpp {cfg.grid_mpp} is finer than its native "
                    f"{reader.mpp:.4g} µm/px; 0 tiles",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return iter(())
            tiles = sampler.tiles(reader, mask)
            if not tiles:
                self.stats.add("no_tissue_slides")
                warnings.warn(
                    f"slide {rec.slide_id} ({rec.path}): no grid tile has >= {cfg.min_tissue:.0%} tissue "
                    f"(tissue mask: {mask.tissue_pixels} px); 0 tiles",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return iter(tiles)
        sampler = RandomTileSampler(cfg.mpps, cfg.tile_size, cfg.min_tissue)
        if not sampler.allowed_mpps(reader):
            self.stats.add("unsupported_mpp_slides")
            warnings.warn(
                f"slide {rec.slide_id}: none of mpps {cfg.mpps} is servable from native "
                f"{reader.mpp:.4g} µm/px; 0 tiles",
                RuntimeWarning,
                stacklevel=2,
            )
            return iter(())
        if mask.tissue_pixels == 0:
            self.stats.add("no_tissue_slides")
            warnings.warn(
                f"slide {rec.slide_id} ({rec.path}): no tissue found (saturation threshold "
                f"{mask.threshold:.1f}); 0 tiles",
                RuntimeWarning,
                stacklevel=2,
            )
            return iter(())
        rng = np.random.default_rng([int(cfg.seed), int(cfg.epoch), self.epoch_token, int(index)])
        return _Limited(sampler.iter_tiles(reader, mask, rng), cfg.tiles_per_slide, rec, self.stats)

    def _example(self, reader: SlideReader, coord: Any) -> dict:
        tile = reader.read_tile(coord.x, coord.y, coord.tile_size, coord.mpp)
        if self.config.image_encoding == "png":
            from PIL import Image

            tile = Image.fromarray(tile)
        return {
            "image": tile,
            "slide_id": coord.slide_id,
            "x": coord.x,
            "y": coord.y,
            "mpp": coord.mpp,
            "level": coord.level,
            "tissue_fraction": coord.tissue_fraction,
        }

    # -- iteration -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Key, dict]]:
        state = self._state_dict if self._state_dict is not None else self._init_state_dict()
        pool_size = 1 if self.config.sampler == "grid" else self.config.max_open_slides
        pool: list[list[int]] = json.loads(state["pool"])  # [[position in self.indices, tiles emitted], ...]
        nxt, cursor = int(state["next"]), int(state["cursor"])
        live: dict[int, tuple[SlideReader, Iterator]] = {}
        try:
            while True:
                while len(pool) < pool_size and nxt < len(self.indices):
                    pool.append([nxt, 0])
                    nxt += 1
                if not pool:
                    return
                cursor %= len(pool)
                pos, emitted = pool[cursor]
                index = self.indices[pos]
                if pos not in live:
                    opened = self._open(index)
                    coords = None
                    if opened is not None:
                        reader, mask = opened
                        coords = self._coords(index, reader, mask)
                        for _ in range(emitted):  # resume: re-draw and drop what was already emitted
                            next(coords, None)
                        live[pos] = (reader, coords)
                    else:
                        pool.pop(cursor)
                        continue
                reader, coords = live[pos]
                coord = next(coords, None)
                example = None
                if coord is not None:
                    try:
                        example = self._example(reader, coord)
                    except SlideError as err:
                        self.stats.add("corrupt_slides")
                        warnings.warn(
                            f"skipping rest of slide {coord.slide_id}: {err}", RuntimeWarning, stacklevel=2
                        )
                if example is None:
                    if coord is None:
                        self.stats.add("slides_done")
                    reader.close()
                    del live[pos]
                    pool.pop(cursor)
                    continue
                pool[cursor][1] = emitted + 1
                cursor += 1
                state["pool"] = json.dumps(pool)
                state["next"] = nxt
                state["cursor"] = cursor
                yield Key(index, emitted), example
        finally:
            for reader, _ in live.values():
                reader.close()


class _Limited:
    """At most ``n`` items of a sampler stream; warns when a slide runs out of acceptable positions early."""

    def __init__(self, it: Iterator, n: int, rec: SlideRecord, stats: SlideStats) -> None:
        self.it, self.left, self.rec, self.stats, self.got = it, n, rec, stats, 0

    def __iter__(self) -> _Limited:
        return self

    def __next__(self) -> Any:
        if self.left <= 0:
            raise StopIteration
        try:
            item = next(self.it)
        except StopIteration:
            if self.got == 0:
                self.stats.add("no_tissue_slides")
                warnings.warn(
                    f"slide {self.rec.slide_id} ({self.rec.path}): no position with enough tissue; 0 tiles",
                    RuntimeWarning,
                    stacklevel=2,
                )
            raise
        self.left -= 1
        self.got += 1
        return item


# ------------------------------------------------------------------------------------------------- the builder
class SlideTiles(datasets.GeneratorBasedBuilder):
    """Tissue-filtered, multi-magnification tiles read from whole-slide images (online patching).

    Use ``SlideTiles(slides=[...], sampler="random", ...).as_streaming_dataset(split="train")`` or
    :func:`tile_stream`. The grid sampler can also ``download_and_prepare()`` (arrow or parquet).
    Example: ``{"image": uint8 (T, T, 3) | PIL.Image, "slide_id": str, "x": int, "y": int (level-0 px),
    "mpp": float (µm/px), "level": int, "tissue_fraction": float}``.
    """

    BUILDER_CONFIG_CLASS = SlideTilesConfig
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Tiles read on the fly from whole-slide images (pathfm online patching).",
            features=tile_features(self.config.tile_size, self.config.image_encoding),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        records = resolve_slides(self.config.slides)
        # A list -> datasets makes one shard per element, i.e. one per slide.
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TRAIN, gen_kwargs={"slides": [(i, r) for i, r in enumerate(records)]}
            )
        ]

    def _iterable(self, slides: list[tuple[int, SlideRecord]]) -> SlideTilesIterable:
        records: list[SlideRecord | None] = [None] * (max(i for i, _ in slides) + 1 if slides else 0)
        for i, r in slides:
            records[i] = r
        return SlideTilesIterable(records, [i for i, _ in slides], self.config, self.info.features)

    def _generate_examples(self, slides: list[tuple[int, SlideRecord]]) -> Iterator[tuple[Key, dict]]:
        yield from self._iterable(slides)

    def _get_examples_iterable_for_split(
        self, split_generator: datasets.SplitGenerator
    ) -> SlideTilesIterable:
        return self._iterable(split_generator.gen_kwargs["slides"])


def tile_stream(
    config: SlideTilesConfig, rank: int = 0, world_size: int = 1, strategy: str | None = None
) -> datasets.IterableDataset:
    """The streaming tile dataset for one process of a (possibly distributed) job.

    Args:
        config: builder config.
        rank: this process's rank.
        world_size: number of processes.
        strategy: ``split_dataset_by_node`` strategy. Default: ``"shards"`` when there are at least
            ``world_size`` slides (every rank reads whole, disjoint slides; ranks may get one slide more than
            others, so their tile counts can differ: loop over a fixed number of steps), else ``"examples"``
            (every rank reads every slide and keeps 1 tile in ``world_size``).

    Returns:
        ``datasets.IterableDataset`` of examples (see :class:`SlideTiles`); wrap it in a
        ``torch.utils.data.DataLoader(ds, batch_size=B, num_workers=W, collate_fn=collate_tiles)``: the
        workers of a rank then split its slides again.
    """
    from datasets.distributed import split_dataset_by_node

    kwargs = {f.name: getattr(config, f.name) for f in _config_fields(config)}
    builder = SlideTiles(cache_dir=str(_builder_cache_dir()), **kwargs)
    ds = builder.as_streaming_dataset(split="train")
    if world_size > 1:
        if strategy is None:
            strategy = "shards" if ds.num_shards >= world_size else "examples"
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size, strategy=strategy)
    return ds


def _builder_cache_dir() -> Path:
    """Where ``datasets`` puts the builder's lock files (streaming writes nothing else)."""
    root = Path(os.environ.get("PATHFM_CACHE", Path.home() / ".cache" / "pathfm")) / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _config_fields(config: SlideTilesConfig) -> list:
    import dataclasses

    skip = {"version", "data_dir", "data_files", "description"}
    return [f for f in dataclasses.fields(config) if f.name not in skip]


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
    "SlideTiles",
    "SlideTilesConfig",
    "SlideTilesIterable",
    "collate_tiles",
    "resolve_slides",
    "stream_stats",
    "tile_features",
    "tile_stream",
]
