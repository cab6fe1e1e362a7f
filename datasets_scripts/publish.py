"""Fixed tile datasets: grid tiles written to parquet with ``download_and_prepare`` and pushed to the Hub.

``build_tile_dataset`` runs :func:`~pathfm.datasets_scripts.builder.tile_stream` (usually the grid sampler with
``image_encoding="png"``, so the Hub viewer shows the tiles) through ``datasets.Dataset.from_generator`` and
``Dataset.to_parquet`` into ``<folder>/data/train-00000-of-00001.parquet`` and writes a
dataset card (``README.md``: YAML front matter with the parquet config, features, licence and the slides'
provenance). ``push_tile_dataset`` uploads the folder with ``HfApi.upload_folder``.

CLI::

    python -m pathfm.datasets_scripts.publish --slides data/slides --grid_mpp 1.0 --output_dir outputs/tiles
    python -m pathfm.datasets_scripts.publish --embedded --grid_mpp 1.0 --output_dir outputs/tiles \
        --push_to_hub user/pathfm-tiles
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathfm.datasets_scripts.slide import add_reading_arguments

if TYPE_CHECKING:  # datasets / the builder are imported where used, so that --help returns at once
    import datasets
    from pathfm.datasets_scripts.builder import SlideStats, SlideTilesConfig

CARD_TEMPLATE = """---
{yaml}---

# {title}

Tiles read from whole-slide images with pathfm's online-patching builder
(`pathfm.datasets_scripts.builder.tile_stream`), {sampler_text}.

| field | meaning |
|---|---|
| `image` | {tile_size} x {tile_size} RGB tile |
| `slide_id` | source slide |
| `x`, `y` | level-0 pixel of the tile's top-left corner in the source slide |
| `mpp` | tile resolution, µm/px |
| `level` | pyramid level the tile was read from |
| `tissue_fraction` | fraction of the tile on the tissue mask (HSV saturation, Otsu with floor {floor}) |

## Slides

| slide | tiles | mpp source | licence / source |
|---|---|---|---|
{slide_rows}

## How it was made

```python
{config_repr}
```

Tissue threshold: a tile is kept when at least {min_tissue:.0%} of it is tissue. Tiles crossing a slide edge are
filled with the slide's background colour. Level-0 resolutions given as overrides are estimates, not
scanner metadata.
"""


def stream_examples(config: SlideTilesConfig, stats: SlideStats | None = None) -> Iterator[dict]:
    """The examples of ``tile_stream(config)`` (a generator for ``Dataset.from_generator``); skipped slides
    are counted in ``stats``."""
    from pathfm.datasets_scripts.builder import tile_stream

    yield from tile_stream(config, stats=stats)


def skipped_slides(stats: SlideStats) -> dict[str, int]:
    """The non-zero slide skip counters of a stream (``corrupt_slides``, ``no_mpp_slides``, ...)."""
    return {k: v for k, v in stats.as_dict().items() if v and k not in ("slides_done", "failed_regions")}


def features_yaml(features: datasets.Features) -> list[dict]:
    """The dataset card's ``dataset_info.features`` list for the tile features (Value, Image, Array3D).

    Raises:
        TypeError: a feature type the tile datasets do not use.
    """
    import datasets

    out: list[dict] = []
    for name, feature in features.items():
        if isinstance(feature, datasets.Value):
            dtype: Any = feature.dtype
        elif isinstance(feature, datasets.Image):
            dtype = "image"
        elif isinstance(feature, datasets.Array3D):
            dtype = {"array3_d": {"shape": list(feature.shape), "dtype": feature.dtype}}
        else:
            raise TypeError(f"feature {name!r}: {type(feature).__name__} has no card YAML form here")
        out.append({"name": name, "dtype": dtype})
    return out


def build_tile_dataset(
    config: SlideTilesConfig, output_dir: str | Path, title: str = "pathfm tiles", license_id: str = "other"
) -> Path:
    """Write the builder's tiles to parquet plus a dataset card.

    Args:
        config: builder config (grid sampler recommended; ``image_encoding="png"`` for the Hub viewer).
        output_dir: folder to create; gets ``data/train-*.parquet``, ``README.md``, ``tiles_summary.json``
            (tiles per slide and the stream's skip counters, ``skipped``: the same counters as training's,
            e.g. ``corrupt_slides`` for a slide ``--reader tiff`` cannot read).
        title: card title.
        license_id: Hub licence id for the card (the slides' licences are listed per slide).

    Returns:
        the folder.

    Raises:
        FileNotFoundError: a slide folder / manifest / catalogue does not exist (nothing is written).
        ValueError: no slide gave a tile (a folder this call created is removed).
    """
    import datasets
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData
    from pathfm.datasets_scripts.builder import SlideStats, resolve_slides, tile_features

    # a missing folder / manifest is one error here, before any folder is made (inside the generator datasets
    # would wrap it in a DatasetGenerationError traceback)
    mpp_given = config.mpp_override is not None or config.default_mpp is not None
    records = resolve_slides(config.slides, mpp_given)
    out = Path(output_dir)
    created = not out.exists()
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    features = tile_features(config.tile_size, config.image_encoding)
    counted: Counter[str] = Counter()
    stats = SlideStats()

    def counted_examples(config: SlideTilesConfig) -> Iterator[dict[str, Any]]:
        for example in stream_examples(config, stats):
            counted["tiles"] += 1
            yield example

    try:
        tiles = datasets.Dataset.from_generator(
            counted_examples, gen_kwargs={"config": config}, features=features, cache_dir=str(out / ".cache")
        )
    except ValueError:
        if counted["tiles"]:
            raise
        if created:  # leave no half-written folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise ValueError(
            f"{config.slides}: no tile to publish (every slide unreadable, without mpp, or no grid tile with "
            f">= {config.min_tissue:.0%} tissue); see the warnings above, or lower --min_tissue"
        ) from None
    tiles.to_parquet(str(data_dir / "train-00000-of-00001.parquet"))
    files = sorted(data_dir.glob("*.parquet"))
    counts: Counter[str] = Counter()
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(columns=["slide_id"]):
            counts.update(batch.column(0).to_pylist())
    # Leave only parquet under data/ and no lock files / cache next to it.
    for leftover in [*out.glob("*.lock"), *data_dir.glob("*.lock")]:
        leftover.unlink(missing_ok=True)
    del tiles
    shutil.rmtree(out / ".cache", ignore_errors=True)
    rows = []
    for r in records:
        source = r.extra.get("source", r.path) if r.extra else Path(r.path).name
        licence = r.extra.get("licence", "") if r.extra else ""
        if config.mpp_override is not None:
            mpp_text = f"--mpp_override {config.mpp_override} µm/px"
        elif r.mpp is not None:
            mpp_text = f"override {r.mpp} µm/px"
        else:
            default = f" (else --default_mpp {config.default_mpp})" if config.default_mpp else ""
            mpp_text = "slide metadata" + default
        rows.append(f"| {r.slide_id} | {counts.get(r.slide_id, 0)} | {mpp_text} | {licence} {source} |")
    card_data = DatasetCardData(
        license=license_id,
        tags=["pathology", "histology", "whole-slide-images", "pathfm"],
        task_categories=["image-feature-extraction"],
        pretty_name=title,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
        dataset_info={
            "features": features_yaml(features),
            "splits": [{"name": "train", "num_examples": int(sum(counts.values()))}],
        },
    )
    yaml_text = card_data.to_yaml() + "\n"
    if config.sampler == "grid":
        sampler_text = (
            f"grid sampler at {config.grid_mpp} µm/px, stride {config.grid_stride or config.tile_size} px, "
            f"{sum(counts.values())} tiles"
        )
    else:
        sampler_text = (
            f"random sampler over {config.mpps} µm/px, seed {config.seed}, epoch {config.epoch}, "
            f"{sum(counts.values())} tiles"
        )
    shown = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("slides", "data_files", "description")
    }
    text = CARD_TEMPLATE.format(
        yaml=yaml_text,
        title=title,
        sampler_text=sampler_text,
        tile_size=config.tile_size,
        floor=config.saturation_floor,
        slide_rows="\n".join(rows),
        min_tissue=config.min_tissue,
        config_repr="SlideTilesConfig(\n" + "".join(f"    {k}={v!r},\n" for k, v in shown.items()) + ")",
    )
    DatasetCard(text).save(out / "README.md")
    (out / "tiles_summary.json").write_text(
        json.dumps(
            {"tiles": dict(counts), "total": sum(counts.values()), "skipped": skipped_slides(stats)}, indent=2
        )
    )
    return out


def push_tile_dataset(
    folder: str | Path, repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Upload a folder made by :func:`build_tile_dataset` to a Hub dataset repo.

    Args:
        folder: the dataset folder.
        repo_id: ``user/name``.
        token: Hub token (default: the logged-in one).
        private: create the repo private.

    Returns:
        the commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        ignore_patterns=[".cache/*", ".cache/**"],
        commit_message="pathfm tile dataset",
    )
    return str(info)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(
        description="Build a fixed grid-tile dataset (parquet + card), optionally push it."
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--slides", help="folder of slides or CSV/TSV manifest")
    src.add_argument("--embedded", action="store_true", help="use the three embedded real slides")
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--grid_mpp", type=float, default=1.0)
    ap.add_argument("--tile_size", type=int, default=256)
    ap.add_argument("--min_tissue", type=float, default=0.4)
    add_reading_arguments(ap)
    ap.add_argument("--push_to_hub", default=None, metavar="REPO_ID")
    ap.add_argument("--private", action="store_true")
    args = ap.parse_args(argv)
    from pathfm.datasets_scripts.builder import SlideTilesConfig

    if args.embedded:
        from pathfm.datasets_scripts.embedded import embedded_slides

        slides = embedded_slides()
    else:
        slides = args.slides
    cfg = SlideTilesConfig(
        slides=slides,
        sampler="grid",
        grid_mpp=args.grid_mpp,
        tile_size=args.tile_size,
        min_tissue=args.min_tissue,
        image_encoding="png",
        mpp_override=args.mpp_override,
        default_mpp=args.default_mpp,
        icc_profile=args.icc_profile,
        reader=args.reader,
    )
    out = build_tile_dataset(cfg, args.output_dir)
    summary = json.loads((out / "tiles_summary.json").read_text())
    skipped = ", ".join(f"{n} {name}" for name, n in summary["skipped"].items()) or "none"
    print(f"wrote {out}: {summary['total']} tiles (slides skipped: {skipped}; see the warnings above)")
    if args.push_to_hub:
        print(push_tile_dataset(out, args.push_to_hub, private=args.private))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with input errors as one line (no traceback) and exit status 2."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"publish: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
