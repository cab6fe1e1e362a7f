"""Stop a training run cleanly on Ctrl-C (SIGINT) or SIGTERM (what SLURM sends before a time limit).

The first signal only sets a flag; the loop checks it after each optimizer step, and all ranks agree (a
gather of the flags) so that every process stops at the same step, optionally saves a checkpoint there and
returns normally. A second Ctrl-C stops this process at once (one line on stderr, exit status 130, no
traceback): for a run that is stuck, e.g. in a collective or waiting on data workers. ``os._exit`` rather
than ``KeyboardInterrupt``: unwinding would join the DataLoader workers, which can wait forever; the workers
notice their parent is gone and exit on their own.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised after a clean stop; ``cli`` prints :attr:`message` and exits with ``128 + signum``.

    Attributes:
        signum: The signal that stopped the run.
        message: "stopped at step N; last checkpoint ...; resume with ..." (one paragraph).
        restore_signals: Puts back the SIGINT / SIGTERM handlers that were there before the loop. The loop
            leaves its own installed when it raises this: closing the tile stream joins the DataLoader workers,
            and a second Ctrl-C there must still exit at once with one line, not raise ``KeyboardInterrupt``
            inside the iterator's ``__del__`` (a traceback). Whoever catches this calls it once the stream is
            closed (``cli`` does, after printing :attr:`message`).
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum, self.message = signum, message
        self.restore_signals: Callable[[], None] = lambda: None


@dataclass
class StopFlag:
    """The signal received so far (0: none). Install with :meth:`install`, restore with :meth:`restore`."""

    signum: int = 0

    def install(self) -> StopFlag:
        """Catch SIGINT and SIGTERM in this process (main thread only, as Python requires)."""
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for s, handler in getattr(self, "_previous", {}).items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            sys.stderr.write(
                "stopped at once by a second Ctrl-C (no checkpoint written now); resume from the last one with "
                "the same flags and --resume_from_checkpoint latest\n"
            )
            sys.stderr.flush()
            os._exit(130)
        self.signum = self.signum or signum


def should_save(signum: int, save_on_interrupt: bool | None) -> bool:
    """Whether to write a checkpoint at the stop: the flag if given, else only for SIGTERM."""
    if save_on_interrupt is not None:
        return save_on_interrupt
    return signum == signal.SIGTERM
