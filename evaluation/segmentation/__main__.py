"""Entry point: ``python -m pathfm.evaluation.segmentation --help``."""

import sys

from pathfm.evaluation.segmentation.cli import main

sys.argv[0] = "python -m pathfm.evaluation.segmentation"  # argparse's usage line, not __main__.py
sys.exit(main())
