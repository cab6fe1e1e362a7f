"""Where the upstream checkouts are, for the scripts in this folder that write the DINOv2 tests' expected values.

Run each ``make_*.py`` outside pathfm with its .venv python, from this folder:
``DINOV2_SRC=<facebookresearch/dinov2 at b8931f7bf91576930313be2c6d6af376033b35f0> python make_losses.py``
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
TESTS = str(HERE.parent)  # dinov2_inputs.py
