"""Fixtures shared by the training tests."""

import pytest
from accelerate.test_utils.testing import AccelerateTestCase


def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerator singletons (AcceleratorState with its PartialState, GradientState)
    so the next ``Accelerator()`` starts afresh, through accelerate's public test case, whose tear-down does
    exactly that between in-process runs."""
    AccelerateTestCase().tearDown()


@pytest.fixture
def fresh_accelerate_state():
    """Reset the Accelerator singletons after the test (several in-process runs in one pytest worker)."""
    yield
    reset_accelerate_state()
