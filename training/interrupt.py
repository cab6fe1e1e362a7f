"""Stop a training run cleanly on Ctrl-C (SIGINT) or SIGTERM (what SLURM sends before a time limit).

The first signal only sets a flag; the loop checks it after each optimizer step, and all ranks agree (a
gather of the flags) so that every process stops at the same step, optionally saves a checkpoint there and
returns normally. A second Ctrl-C gives the usual ``KeyboardInterrupt`` for a run that is stuck.
"""

from __future__ import annotations

import signal
import types
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised after a clean stop; ``cli`` prints :attr:`message` and exits with ``128 + signum``.

    Attributes:
        signum: The signal that stopped the run.
        message: "stopped at step N; last checkpoint ...; resume with ..." (one paragraph).
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum, self.message = signum, message


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
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = self.signum or signum


def should_save(signum: int, save_on_interrupt: bool | None) -> bool:
    """Whether to write a checkpoint at the stop: the flag if given, else only for SIGTERM."""
    if save_on_interrupt is not None:
        return save_on_interrupt
    return signum == signal.SIGTERM
