"""Entry point: ``python -m pathfm.evaluation.mil --help``."""

import sys

from pathfm.evaluation.mil.cli import main

sys.argv[0] = "python -m pathfm.evaluation.mil"  # argparse's usage line, not __main__.py
sys.exit(main())
