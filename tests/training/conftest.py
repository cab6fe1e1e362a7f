"""Fixtures shared by the training tests."""

import pytest
from accelerate.state import AcceleratorState, GradientState, PartialState


def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerator singletons so the next ``Accelerator()`` starts afresh
    (accelerate's own tests do the same between in-process runs)."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Reset the Accelerator singletons after the test (several in-process runs in one pytest worker)."""
    yield
    reset_accelerate_state()
