"""Entry point: ``python -m pathfm.evaluation.segmentation --help``."""

import sys

from pathfm.evaluation.segmentation.cli import main

sys.exit(main())
