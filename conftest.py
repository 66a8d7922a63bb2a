"""Fixtures and hooks every package's tests share."""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI timeout, ``kill``) ends like Ctrl-C: fixtures are torn down,
    so the platform processes the suites started are stopped instead of being left running."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
