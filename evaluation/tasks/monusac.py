"""MoNuSAC 2020 nuclear segmentation, as eva's ``MoNuSAC`` dataset reads it.

Layout under ``data_dir``: ``MoNuSAC_images_and_annotations/<patient>/<image>.tif`` + same-stem ``.xml``
(train, 209 images) and ``MoNuSAC Testing Data and Annotations/<patient>/...`` (validation, 85). Each XML
``Annotation`` names its class in ``Attributes/Attribute@Name`` and holds ``Regions/Region/Vertices/Vertex``
polygons (X, Y in px). Unknown names become Ambiguous (class 5, not scored); later annotations paint over
earlier ones; polygons are filled with scikit-image's ``draw.polygon`` (eva 0.4.5
``eva/vision/data/datasets/segmentation/monusac.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree

import numpy as np
from pathfm.evaluation.tasks.common import TaskDataError
from pathfm.evaluation.tasks.segmentation_base import SegmentationTask, SegSample, require_folder
from PIL import Image


def polygons_to_mask(xml_path: str | Path, size: tuple[int, int], class_names: tuple[str, ...]) -> np.ndarray:
    """Rasterise a MoNuSAC XML into class ids int64 (H, W) for an image of ``size`` (W, H).

    Raises:
        TaskDataError: unreadable XML, an annotation without a class name, or a vertex without X/Y.
    """
    ambiguous = class_names.index("Ambiguous")
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError) as err:
        raise TaskDataError(f"monusac: cannot parse {xml_path}: {err}") from err
    width, height = size
    from skimage import draw  # here, not at import: the segmentation --help names this task

    mask = np.zeros((height, width), dtype=np.int64)
    for annotation in root.iter("Annotation"):
        attribute = annotation.find("Attributes/Attribute")
        if attribute is None or "Name" not in attribute.attrib:
            raise TaskDataError(f"monusac: {xml_path}: an Annotation has no Attributes/Attribute@Name")
        name = attribute.attrib["Name"]
        class_id = class_names.index(name) if name in class_names[1:] else ambiguous
        for region in annotation.iter("Region"):
            try:
                points = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
            except (KeyError, ValueError) as err:
                raise TaskDataError(f"monusac: {xml_path}: a Vertex lacks a numeric X/Y ({err})") from err
            if points:
                xy = np.asarray(points)
                rows, cols = draw.polygon(xy[:, 1], xy[:, 0], (height, width))
                mask[rows, cols] = class_id
    return mask


class MoNuSAC(SegmentationTask):
    """MoNuSAC: 4 nucleus classes + background; Ambiguous regions not scored."""

    TASK_NAME = "monusac"
    CLASS_NAMES = ("Background", "Epithelial", "Lymphocyte", "Neutrophil", "Macrophage", "Ambiguous")
    IGNORE_INDEX = 5
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 209, "validation": 85}
    MPP = 0.25
    DESCRIPTION = "MoNuSAC multi-organ nuclei, 4 classes + background (209 / 85 images, 0.25 µm/px)."
    FOLDERS: ClassVar[dict[str, str]] = {
        "train": "MoNuSAC_images_and_annotations",
        "validation": "MoNuSAC Testing Data and Annotations",
    }

    def _list(self, split: str) -> list[SegSample]:
        base = require_folder(self.root / self.FOLDERS[split], "patient folders of .tif + .xml")
        return [SegSample(str(p), str(p.with_suffix(".xml"))) for p in base.glob("*/*.tif")]

    def load_mask(self, sample: SegSample) -> np.ndarray:
        try:
            with Image.open(sample.image) as img:
                size = img.size
        except OSError as err:
            raise TaskDataError(f"monusac: cannot read image {sample.image}: {err}") from err
        return polygons_to_mask(sample.label, size, self.CLASS_NAMES)

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        """Whether ``data_dir`` holds the training folder."""
        return data_dir is not None and (Path(data_dir) / cls.FOLDERS["train"]).is_dir()
