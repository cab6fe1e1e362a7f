"""Safe decoding of user-uploaded tile images for the Space.

An uploaded file is checked in this order, so a hostile or broken file never reaches the decoder:

1. it exists and is a regular file;
2. its header is readable by PIL (or, for TIFF files PIL cannot read, by tifffile): otherwise
   :class:`InputError` "not an image";
3. its header dimensions are at most ``max_pixels``: otherwise :class:`InputError` "refused before decoding"
   (PIL's ``Image.MAX_IMAGE_PIXELS`` is also lowered to the same limit by :func:`set_pil_pixel_limit`, so a
   decompression bomb opened anywhere else in the process fails too);
4. only then are the pixels decoded and converted to 8-bit RGB: RGBA/LA/P-with-transparency are composited
   on white, grayscale is replicated to three channels, 16-bit and 32-bit integer or float images are
   rescaled to 0-255, CMYK/YCbCr/LAB are converted by PIL, and the EXIF orientation is applied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

DEFAULT_MAX_PIXELS = 40_000_000
"""Default upper bound on width x height of an uploaded tile image (40 MP, e.g. 6324 x 6324 px)."""


class InputError(ValueError):
    """A user input the Space cannot use; the message names the file and the problem and is shown as is."""


def set_pil_pixel_limit(max_pixels: int) -> None:
    """Lower PIL's decompression-bomb limit for the whole process.

    PIL warns above ``MAX_IMAGE_PIXELS`` and raises ``DecompressionBombError`` above twice that, at
    ``Image.open`` time (header only), so third-party code in the process (gradio's own preprocessing
    included) cannot decode an oversized image either.

    Args:
        max_pixels: Largest width x height allowed, in pixels.
    """
    PIL.Image.MAX_IMAGE_PIXELS = int(max_pixels)


def _header_size_tifffile(path: Path) -> tuple[int, int, object]:
    """Read (width, height, page) of the first page of a TIFF with tifffile without decoding pixels."""
    import tifffile

    tif = tifffile.TiffFile(str(path))
    page = tif.pages[0]
    shape = page.shape
    if page.samplesperpixel > 1 and len(shape) == 3 and shape[0] == page.samplesperpixel:
        height, width = shape[1], shape[2]  # planar (S, H, W)
    else:
        height, width = shape[0], shape[1]
    return int(width), int(height), tif


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map an integer or float array to uint8.

    uint16 uses the full 16-bit range (v / 257); other integer types and floats are min-max scaled, which
    is what a viewer does for scientific images whose range is not the type's full range.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0 + 0.5).clip(0, 255).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    if high <= low:
        return np.full(array.shape, 0 if high <= 0 else 255, dtype=np.uint8)
    scaled = (np.where(finite, values, low) - low) / (high - low) * 255.0
    return (scaled + 0.5).clip(0, 255).astype(np.uint8)


def array_to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4) array of any dtype to uint8 RGB.

    Alpha (the last channel of 2- and 4-channel arrays) is composited on a white background.

    Args:
        array: Image array; integer dtypes are rescaled per :func:`_rescale_to_uint8`.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        InputError: if the array does not have one of the shapes above.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"unsupported image array shape {array.shape}; expected (H, W[, 1-4 channels])")
    channels = array.shape[2]
    has_alpha = channels in (2, 4)
    color = array[:, :, : channels - 1] if has_alpha else array
    color = _rescale_to_uint8(color)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if has_alpha:
        alpha = _rescale_to_uint8(array[:, :, -1:]).astype(np.float32) / 255.0
        color = (color.astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(color)


def pil_to_rgb_uint8(image: PIL.Image.Image) -> np.ndarray:
    """Convert an opened (not necessarily loaded) PIL image of any mode to uint8 RGB.

    Args:
        image: PIL image; modes 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16*, F are handled.

    Returns:
        uint8 array (H, W, 3).
    """
    image = PIL.ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    return array_to_rgb_uint8(np.array(image))  # a writable copy


def load_rgb_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Open an uploaded image file safely and return it as uint8 RGB.

    Args:
        path: Image file (PNG, JPEG, TIFF, WebP, BMP... anything PIL reads; TIFF also via tifffile).
        max_pixels: Largest width x height accepted, checked on the header before any pixel is decoded.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        InputError: if the file is missing, not an image, larger than ``max_pixels`` (message says it was
            refused before decoding and gives the header size) or its pixel data is corrupt/truncated.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputError(f"{name}: file not found")
    try:
        image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as error:
        raise InputError(
            f"{name}: image is far over the {max_pixels / 1e6:.0f} MP limit (PIL's decompression-bomb check: "
            f"{error}); refused before decoding."
        ) from None
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as pil_error:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _load_with_tifffile(path, max_pixels, pil_error)
        raise InputError(
            f"{name}: not an image PIL can read ({type(pil_error).__name__}: {pil_error})"
        ) from None
    with image:
        width, height = image.size
        _check_pixels(name, width, height, max_pixels)
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as error:
            if path.suffix.lower() in (".tif", ".tiff"):
                return _load_with_tifffile(path, max_pixels, error)
            raise InputError(f"{name}: image data is corrupt or truncated ({error})") from None
        return pil_to_rgb_uint8(image)


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    """Raise InputError when width x height exceeds max_pixels."""
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: image has an empty size {width} x {height} px")
    if width * height > max_pixels:
        raise InputError(
            f"{name}: image is {width} x {height} px ({width * height / 1e6:.1f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit; refused before decoding. Upload a tile or a cropped region."
        )


def _load_with_tifffile(path: Path, max_pixels: int, pil_error: Exception) -> np.ndarray:
    """Fallback decoder for TIFFs PIL cannot read (e.g. 16-bit RGB); same checks as :func:`load_rgb_image`."""
    name = path.name
    try:
        width, height, tif = _header_size_tifffile(path)
    except Exception as error:  # noqa: BLE001  (tifffile raises many types for non-TIFF bytes)
        raise InputError(f"{name}: not a readable image ({pil_error}; tifffile: {error})") from None
    with tif:
        _check_pixels(name, width, height, max_pixels)
        try:
            page = tif.pages[0]
            array = page.asarray()
            if array.ndim == 3 and page.planarconfig == 2 and array.shape[0] == page.samplesperpixel:
                array = np.moveaxis(array, 0, -1)
        except Exception as error:  # noqa: BLE001  (codec errors of imagecodecs have many types)
            raise InputError(f"{name}: TIFF pixel data is corrupt or truncated ({error})") from None
    return array_to_rgb_uint8(array)
