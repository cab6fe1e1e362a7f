"""Report a user's mistake from a training process: one line, once, where the user will see it.

Under ``accelerate launch`` with several processes (torch elastic) every rank reaches the same error. The
launcher stops the other ranks with SIGTERM as soon as one exits, and after all have exited prints its own
failure report, ending with the "Root Cause" (the first failure it observed), after anything a worker printed.
So, when torch elastic started us (``TORCHELASTIC_ERROR_FILE`` set):

- rank 0 writes the line to that error file, through a subclass of the public
  :class:`~torch.distributed.elastic.multiprocessing.errors.ErrorHandler` (the extension point its docs name),
  and the report's root cause reads our line (instead of "To enable traceback see: ..."): printed once, by the
  launcher, in the last lines of the output;
- the other ranks print and record nothing and wait :data:`FOLLOWER_DELAY_S` before exiting, so that rank 0
  is the first failure the launcher sees even when it was the slower to get there.

Without torch elastic (``python training/dino.py``, a one-process ``accelerate launch``) the line is printed to
stderr by rank 0. ``pathfm train --num_processes N`` (``training/train_command.py``) prints it as the very
last line.
"""

from __future__ import annotations

import json
import os
import sys
import time

from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

__all__ = ["FOLLOWER_DELAY_S", "LineErrorHandler", "report_user_error"]

FOLLOWER_DELAY_S = 3.0
"""Seconds a rank other than 0 waits before exiting on a user error (rank 0 exits at once)."""


def _launcher_rank() -> int | None:
    """This process's global rank when a launcher started it (``RANK`` set), else None."""
    rank = os.environ.get("RANK")
    return int(rank) if rank is not None and rank.isdigit() else None


def report_user_error(line: str, rank_local: bool = False) -> None:
    """Report ``line`` once: to torch elastic's error file (rank 0 under torch elastic), else to stderr.

    Args:
        line: the whole message, e.g. ``"training/dino.py: error: preset 'x' not found ..."``.
        rank_local: the error is this rank's own (e.g. its slides gave no batch), not one every rank reaches:
            reported by this rank at once, whichever it is, so that it is the launcher's root cause (the other
            ranks then fail in their next collective, later).
    """
    rank = _launcher_rank()
    if rank not in (None, 0) and not rank_local:
        time.sleep(FOLLOWER_DELAY_S)  # the same error is rank 0's to report: be the later failure
        return
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        LineErrorHandler(line).record_exception(ValueError(line))
    else:
        print(line, file=sys.stderr, flush=True)


class LineErrorHandler(ErrorHandler):
    """Writes one line (no traceback) as torch elastic's error record.

    :class:`~torch.distributed.elastic.multiprocessing.errors.ErrorHandler`'s documentation invites subclasses
    to override ``record_exception``; the record has the format its ``ProcessFailure`` reads (``message`` with
    ``extraInfo.py_callstack`` and ``timestamp``), and the launcher's report shows ``py_callstack`` as the
    failure's "traceback": here, our line.
    """

    def __init__(self, line: str) -> None:
        self.line = line

    def record_exception(self, e: BaseException) -> None:
        """Write :attr:`line` to ``TORCHELASTIC_ERROR_FILE`` (set by the launcher for each worker), if set."""
        path = os.environ.get("TORCHELASTIC_ERROR_FILE")
        if not path:
            return
        extra = {"py_callstack": self.line, "timestamp": str(int(time.time()))}
        with open(path, "w") as fh:
            json.dump({"message": {"message": self.line, "extraInfo": extra}}, fh)
