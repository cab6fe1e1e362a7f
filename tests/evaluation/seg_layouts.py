"""Writers of miniature CoNSeP and MoNuSAC folders in their official layouts (nuclei as coloured ellipses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

# class id -> RGB of its nuclei (dark, distinct), on a pink stroma background
COLOURS = {1: (70, 30, 120), 2: (20, 20, 60), 3: (150, 60, 160), 4: (110, 90, 40)}


def _ellipses(rng: np.random.Generator, size: int, n: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    out = []
    for _ in range(n):
        cx, cy = rng.integers(4, size - 4, 2)
        rx, ry = rng.integers(2, 5, 2)
        out.append((int(rng.integers(1, 5)), (int(cx - rx), int(cy - ry), int(cx + rx), int(cy + ry))))
    return out


def _paint(rng: np.random.Generator, size: int, nuclei: list) -> tuple[Image.Image, np.ndarray]:
    base = np.clip(rng.normal((230, 170, 200), 8, (size, size, 3)), 0, 255).astype(np.uint8)
    image, labels = Image.fromarray(base), Image.new("L", (size, size), 0)
    for cls, box in nuclei:
        ImageDraw.Draw(image).ellipse(box, fill=COLOURS[cls])
        ImageDraw.Draw(labels).ellipse(box, fill=cls)
    return image, np.asarray(labels)


def make_consep(root: Path, n_train: int = 3, n_test: int = 2, size: int = 64, seed: int = 0) -> Path:
    """``{Train,Test}/Images/<split>_<i>.png`` + ``Labels/<same>.mat`` (``type_map`` with raw types 1..7)."""
    rng = np.random.default_rng(seed)
    raw_of = {1: [1], 2: [2], 3: [3, 4], 4: [5, 6, 7]}  # class -> raw CoNSeP types that merge into it
    for folder, n in (("Train", n_train), ("Test", n_test)):
        (root / folder / "Images").mkdir(parents=True, exist_ok=True)
        (root / folder / "Labels").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, classes = _paint(rng, size, _ellipses(rng, size, 12))
            raw = np.zeros_like(classes, dtype=np.int32)
            for cls, types in raw_of.items():
                raw[classes == cls] = types[i % len(types)]
            stem = f"{folder.lower()}_{i + 1}"
            image.save(root / folder / "Images" / f"{stem}.png")
            scipy.io.savemat(root / folder / "Labels" / f"{stem}.mat", {"type_map": raw, "inst_map": raw > 0})
    return root


def _xml(nuclei: list, names: dict[int, str]) -> str:
    parts = ['<?xml version="1.0"?>\n<Annotations>']
    for cls in sorted({c for c, _ in nuclei}):
        parts.append(
            f'<Annotation Id="{cls}"><Attributes><Attribute Name="{names[cls]}" Id="0"/></Attributes>'
        )
        parts.append("<Regions>")
        for c, (x0, y0, x1, y1) in nuclei:
            if c != cls:
                continue
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            vertices = "".join(
                f'<Vertex X="{cx + rx * np.cos(a):.2f}" Y="{cy + ry * np.sin(a):.2f}"/>' for a in t
            )
            parts.append(f"<Region><Attributes/><Vertices>{vertices}</Vertices></Region>")
        parts.append("</Regions></Annotation>")
    parts.append("</Annotations>")
    return "".join(parts)


def make_monusac(root: Path, n_train: int = 3, n_test: int = 2, size: int = 64, seed: int = 0) -> Path:
    """``MoNuSAC_images_and_annotations/<patient>/<image>.tif`` + ``.xml``, and the testing folder.

    Class 4 nuclei of test images are annotated with the unknown name "Unknown cell" (-> Ambiguous).
    """
    rng = np.random.default_rng(seed)
    names = {1: "Epithelial", 2: "Lymphocyte", 3: "Neutrophil", 4: "Macrophage"}
    for folder, n in (
        ("MoNuSAC_images_and_annotations", n_train),
        ("MoNuSAC Testing Data and Annotations", n_test),
    ):
        for i in range(n):
            patient = root / folder / f"TCGA-P{i % 2}-01Z"
            patient.mkdir(parents=True, exist_ok=True)
            nuclei = _ellipses(rng, size, 12)
            image, _ = _paint(rng, size, nuclei)
            image.save(patient / f"TCGA-P{i % 2}-01Z_{i + 1}.tif")
            used = {**names, 4: "Unknown cell"} if "Testing" in folder else names
            (patient / f"TCGA-P{i % 2}-01Z_{i + 1}.xml").write_text(_xml(nuclei, used))
    return root
