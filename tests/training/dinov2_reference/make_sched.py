"""Writes expected values of the DINOv2 equality tests by running upstream code (not part of pathfm).

Run outside pathfm with its .venv python, from this folder:
``DINOV2_SRC=<facebookresearch/dinov2 at b8931f7bf91576930313be2c6d6af376033b35f0> python make_sched.py``
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
import sys, json

sys.path[:0] = [DINOV2]
from dinov2.utils.utils import CosineScheduler

E, EP = 4, 5  # OFFICIAL_EPOCH_LENGTH, epochs
out = {
    "lr": CosineScheduler(
        0.004 * (64 / 1024) ** 0.5, 1e-6, EP * E, warmup_iters=2 * E, start_warmup_value=0
    ).schedule.tolist(),
    "wd": CosineScheduler(0.04, 0.4, EP * E).schedule.tolist(),
    "momentum": CosineScheduler(0.992, 1.0, EP * E).schedule.tolist(),
}
tt = CosineScheduler(0.07, 0.07, 3 * E, warmup_iters=3 * E, start_warmup_value=0.04)
out["teacher_temp"] = [float(tt[i]) for i in range(EP * E)]
json.dump(out, open(OUT + f"/sched.json", "w"))
for k, v in out.items():
    print(k, v)
