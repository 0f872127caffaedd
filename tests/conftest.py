"""Fixtures that start the real fwatchdog on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Watchdog

FUNCTIONS = Path(__file__).parent / "functions"


@pytest.fixture
def start_watchdog(tmp_path: Path) -> Iterator[Watchdog.Factory]:
    """Start fwatchdog processes with the given settings; each is stopped after the test."""
    started: list[Watchdog] = []

    def start(**settings: str) -> Watchdog:
        watchdog = Watchdog.start(tmp_path / f"server{len(started)}", settings)
        started.append(watchdog)
        return watchdog

    yield start
    for watchdog in started:
        watchdog.stop()


@pytest.fixture
def functions() -> Path:
    """The folder of small function programs used by the tests."""
    return FUNCTIONS
