"""Expected values for the DINOv2 tests (kde) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
import sys

sys.path[:0] = [OPENMIDNIGHT + "/dinov2/loss", TESTS]
import torch
from kde_loss import KDELoss
from dinov2_inputs import wave

kde = KDELoss()
x = wave(8, 5, 0.2, 1.5)
print("KDE_8X5", repr(float(kde(x))))
cls = wave(2 * 4, 5, 0.9, 1.0)
print("KDE_PER_CROP", repr(float(sum(kde(p) for p in cls.chunk(2)))))
dup = torch.cat([wave(3, 5, 0.2, 1.5), wave(3, 5, 0.2, 1.5), torch.zeros(2, 5)])
print("KDE_DUPLICATES", repr(float(kde(dup))))
