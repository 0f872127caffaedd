"""Log helpers: pure logic, no server."""

from __future__ import annotations

import logging

import pytest

from watchdog import logs


def test_repeated_warning_counts_left_out_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    warning = logs.RepeatedWarning(logging.getLogger("test.repeated"), interval=1.0)
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        for _ in range(5):
            warning.warning("Rejected %s", "request")
        now[0] += 1.5
        warning.warning("Rejected %s", "request")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Rejected request",
        "Rejected request (and 4 more like it since the last such line)",
    ]
