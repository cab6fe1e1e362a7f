"""Entry point: ``python -m pathfm.evaluation.mil --help``."""

import sys

from pathfm.evaluation.mil.cli import main

sys.exit(main())
