"""Tiny synthetic whole-slide images written with tifffile, readable by OpenSlide (generic tiled TIFF).

OpenSlide reads a tifffile pyramid only as one page per level, tiled, photometric RGB; its mpp comes from the
resolution tags (unit centimetre). Tissue is drawn as saturated pink on white glass.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

PINK = (200, 60, 140)
WHITE = (255, 255, 255)


def downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize (PIL box filter) to (width, height)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def write_slide(
    path: Path,
    level0: np.ndarray,
    level_sizes: list[tuple[int, int]] | None = None,
    mpp: float | None = 0.5,
    tile: int = 64,
    unit: str = "CENTIMETER",
    description: str | None = None,
    icc: bytes | None = None,
    compression: str = "zlib",
    jpeg_rgb: bool = False,
) -> Path:
    """Write a pyramid: level 0 = ``level0`` (h, w, 3|4 uint8), further levels resized to ``level_sizes`` (w, h).

    Args:
        path: output .tiff.
        level0: RGB or RGBA (straight alpha) image.
        level_sizes: sizes of levels 1.. as (width, height); any sizes (non-integer downsamples allowed).
        mpp: level-0 µm/px written as resolution tags (None: no usable resolution).
        tile: TIFF tile side (multiple of 16).
        unit: TIFF ResolutionUnit of the tags: INCH, CENTIMETER, MILLIMETER, MICROMETER or NONE (the value is
            then written as px per centimetre).
        description: ImageDescription of level 0 (e.g. an Aperio-style ``MPP = ...`` of a converted file).
        icc: ICC profile bytes written as the InterColorProfile tag (34675) of every level.
        compression: "zlib" or "jpeg" (quality 90; tifffile stores JPEG as YCbCr 4:2:0 with a JFIF marker).
        jpeg_rgb: with "jpeg", store untransformed RGB without a JFIF marker, as Aperio SVS files do.
    """
    um_per_unit = {"INCH": 25_400.0, "CENTIMETER": 1e4, "MILLIMETER": 1e3, "MICROMETER": 1.0, "NONE": 1e4}
    levels = [level0] + [downscale(level0, s) for s in (level_sizes or [])]
    _h0, w0 = level0.shape[:2]
    with tifffile.TiffWriter(path) as tw:
        for i, arr in enumerate(levels):
            kw: dict = {}
            if mpp is not None:
                ds = w0 / arr.shape[1]
                res = um_per_unit[unit] / (mpp * ds)  # px per unit
                kw = {"resolution": (res, res), "resolutionunit": unit}
            if arr.shape[2] == 4:
                kw["extrasamples"] = [2]  # unassociated alpha
            if description is not None and i == 0:
                kw["description"] = description
            if icc is not None:
                kw["extratags"] = [(34675, 7, len(icc), icc, True)]  # InterColorProfile, UNDEFINED bytes
            if compression == "jpeg":
                kw["compressionargs"] = {"level": 90, **({"outcolorspace": "RGB"} if jpeg_rgb else {})}
            tw.write(
                arr,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **kw,
            )
    return path


def blank(width: int, height: int, color: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Uniform RGB image (h, w, 3)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = color
    return img


def tissue_rect_slide(
    path: Path,
    width: int,
    height: int,
    rect: tuple[int, int, int, int],
    mpp: float = 0.5,
    level_sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """White slide with one pink rectangle (x, y, w, h) level-0 px, with mild texture so it looks stained."""
    img = blank(width, height)
    x, y, w, h = rect
    rng = np.random.default_rng(0)
    patch = np.empty((h, w, 3), dtype=np.int16)
    patch[...] = PINK
    patch += rng.integers(-15, 16, size=(h, w, 1), dtype=np.int16)
    img[y : y + h, x : x + w] = np.clip(patch, 0, 255).astype(np.uint8)
    return write_slide(path, img, level_sizes, mpp=mpp)


def gradient_image(width: int, height: int) -> np.ndarray:
    """R = x / 8 (mod 256 never reached for w <= 2040), G = y / 8, B = 128: linear, so area-averaging and
    bilinear resampling preserve it and any tile's pixel values reveal its level-0 coordinates."""
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = np.clip(np.rint(xs[None, :] / 8.0), 0, 255)
    img[..., 1] = np.clip(np.rint(ys[:, None] / 8.0), 0, 255)
    img[..., 2] = 128
    return img


def _s15f16(v: float) -> bytes:
    return int(round(v * 65536)).to_bytes(4, "big", signed=True)


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15f16(x) + _s15f16(y) + _s15f16(z)


def linear_rgb_icc(description: str = "pathfm test linear RGB") -> bytes:
    """A small ICC v2 matrix/TRC RGB profile: Adobe RGB (1998) primaries adapted to D50 (the colorants of
    Adobe's published profile) with *linear* tone curves (gamma 1.0), so applying it to sRGB changes colours a
    lot: a stored grey 128 is linear 0.502, i.e. sRGB 1.055 * 0.502 ** (1 / 2.4) - 0.055 = 0.7354 -> 187.5."""
    desc = description.encode("ascii") + b"\0"
    tags = {
        # textDescription: ASCII count + text, then empty Unicode (8 bytes) and ScriptCode (70 bytes) parts
        b"desc": b"desc" + bytes(4) + len(desc).to_bytes(4, "big") + desc + bytes(8) + bytes(70),
        b"wtpt": _xyz_tag(0.9642, 1.0, 0.8249),
        b"rXYZ": _xyz_tag(0.6097, 0.3111, 0.0195),
        b"gXYZ": _xyz_tag(0.2053, 0.6257, 0.0609),
        b"bXYZ": _xyz_tag(0.1492, 0.0632, 0.7446),
        b"rTRC": b"curv" + bytes(4) + (1).to_bytes(4, "big") + (256).to_bytes(2, "big") + bytes(2),
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags.items():
        body += bytes(-len(body) % 4)  # tag data starts on 4-byte boundaries
        table += sig + (offset + len(data)).to_bytes(4, "big") + len(body).to_bytes(4, "big")
        data += body
    size = offset + len(data)
    header = (
        size.to_bytes(4, "big") + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ " + bytes(12)
        + b"acsp" + bytes(4) + bytes(4) + bytes(4) + bytes(4) + bytes(8) + bytes(4)
        + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249) + bytes(4) + bytes(16) + bytes(28)
    )  # fmt: skip
    assert len(header) == 128
    return header + len(tags).to_bytes(4, "big") + table + data


def corrupt_tile_copy(src: Path, dst: Path) -> Path:
    """Copy a slide and overwrite the middle of its file (level-0 tile data) with garbage."""
    data = bytearray(Path(src).read_bytes())
    mid = len(data) // 3
    data[mid : mid + 2000] = bytes(range(256)) * 7 + bytes(208)
    Path(dst).write_bytes(bytes(data))
    return dst


def scramble_tiles(src: Path, dst: Path, page: int = 0, rows: range | None = None) -> Path:
    """Copy a tiled TIFF/SVS and scramble the stored tiles of one page (all, or those in tile ``rows``): each
    tile keeps its first 32 bytes (JPEG markers) and gets seeded random bytes after them, so it no longer
    decodes while the file, its other pages and its metadata stay intact."""
    shutil.copy(src, dst)
    with tifffile.TiffFile(dst) as tif:
        p = tif.pages[page]
        across = -(-p.imagewidth // p.tilewidth)
        spans = [
            (offset, count)
            for i, (offset, count) in enumerate(zip(p.dataoffsets, p.databytecounts))
            if count > 64 and (rows is None or i // across in rows)
        ]
    rng = np.random.default_rng(0)
    with open(dst, "r+b") as f:
        for offset, count in spans:
            f.seek(offset + 32)
            f.write(rng.integers(0, 256, count - 32, dtype=np.uint8).tobytes())
    return dst
