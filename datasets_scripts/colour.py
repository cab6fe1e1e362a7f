"""Embedded ICC colour profiles: apply them (convert to sRGB) or ignore them, by an explicit option.

Scanners embed an ICC profile describing their RGB values (Aperio ``aperio.ICC Profile``, a TIFF
``InterColorProfile`` tag, DICOM...); OpenSlide returns the stored values untouched and exposes the profile
(``OpenSlide.color_profile``). pathfm's option ``icc_profile``:

* ``"ignore"`` (default): tiles are the stored RGB values, as OpenSlide returns them. Why the default: the
  tile datasets pathfm evaluates on (eva's benchmarks) and the public pathology foundation models were made
  from stored values without colour management, so converting only at pre-training would shift the training
  colours away from every evaluation input; it also costs a LittleCMS pass over every region read.
* ``"apply"``: each region read is converted from the slide's profile to sRGB (Pillow's ``ImageCms``, i.e.
  LittleCMS, with the profile's default rendering intent) before it is resized to the tile, and the tissue
  mask is computed on the converted colours. A slide without a profile is read unchanged.

The option is recorded in the catalogue (``icc_option``, and the slide's ``icc_profile`` description) and in
the training run's config.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

__all__ = ["DEFAULT_ICC", "ICC_OPTIONS", "IccTransform", "check_icc_option"]

ICC_OPTIONS = ("ignore", "apply")
DEFAULT_ICC = "ignore"


def check_icc_option(option: str) -> str:
    """Return ``option`` if it is one of :data:`ICC_OPTIONS`.

    Raises:
        ValueError: anything else (the valid values are named).
    """
    if option not in ICC_OPTIONS:
        raise ValueError(f"icc_profile must be one of {', '.join(ICC_OPTIONS)}, got {option!r}")
    return option


def profile_description(profile: Any) -> str | None:
    """The profile's description (e.g. 'IEC 61966-2.1 Default RGB colour space - sRGB'), or None."""
    if profile is None:
        return None
    from PIL import ImageCms

    try:
        return ImageCms.getProfileDescription(profile).strip() or "unnamed profile"
    except ImageCms.PyCMSError:
        return "unnamed profile"


class IccTransform:
    """A slide's colour step: the embedded profile -> sRGB when ``option == "apply"``, else the identity.

    Args:
        profile: ``PIL.ImageCms.ImageCmsProfile`` embedded in the slide, or None.
        option: ``"ignore"`` or ``"apply"``.

    Attributes:
        description: the embedded profile's description (None: no profile).
        active: whether pixels are converted.

    Raises:
        ValueError: unknown option, or a profile LittleCMS cannot build a transform from (with ``"apply"``).
    """

    def __init__(self, profile: Any, option: str = DEFAULT_ICC) -> None:
        self.option = check_icc_option(option)
        self.description = profile_description(profile)
        self.active = option == "apply" and profile is not None
        self._transform = None
        if self.active:
            from PIL import ImageCms

            try:
                self._transform = ImageCms.buildTransform(
                    profile,
                    ImageCms.createProfile("sRGB"),
                    "RGB",
                    "RGB",
                    renderingIntent=ImageCms.getDefaultIntent(profile),
                )
            except ImageCms.PyCMSError as err:
                raise ValueError(
                    f"embedded ICC profile {self.description!r} cannot be applied: {err}"
                ) from err

    def __call__(self, img: Image.Image) -> Image.Image:
        """RGB image -> RGB image in sRGB (``apply`` with a profile) or unchanged."""
        if self._transform is None:
            return img
        from PIL import ImageCms

        return ImageCms.applyTransform(img, self._transform)
