"""Run small CPU workloads on one thread: below a few hundred thousand elements per step, torch's intra-op
threads only add synchronisation (and on a busy machine, spin-waiting that makes steps ~20x slower)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_WORK = 1 << 18


@contextmanager
def threads_for(elements_per_step: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Within the block, use 1 intra-op thread on CPU when ``elements_per_step`` < ``SMALL_WORK``."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and elements_per_step < SMALL_WORK:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
