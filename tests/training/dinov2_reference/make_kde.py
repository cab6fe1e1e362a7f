"""Writes expected values of the DINOv2 equality tests by running upstream code (not part of pathfm).

Run outside pathfm with its .venv python, from this folder:
``DINOV2_SRC=<facebookresearch/dinov2 at b8931f7bf91576930313be2c6d6af376033b35f0> python make_kde.py``
(``OPENMIDNIGHT_SRC``: MedARC-AI/OpenMidnight at f7d5a6457d7f34c0a7be194ed8d0b1199e5360ca, for KDE).
Results go to ``$OUT`` (default /tmp). ``make_step.py`` also needs omegaconf on ``sys.path`` and uses
``xformers_shim/`` (a stand-in for xFormers' block-diagonal head batching; the head is row-wise).
"""

import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
DINOV2 = os.environ.get("DINOV2_SRC", "/tmp/dv2")
OPENMIDNIGHT = os.environ.get("OPENMIDNIGHT_SRC", "/tmp/om")
SHIM = str(HERE / "xformers_shim")
OUT = os.environ.get("OUT", "/tmp")
import sys

sys.path[:0] = [OPENMIDNIGHT + "/dinov2/loss", str(HERE.parent)]
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
