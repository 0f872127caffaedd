"""The fwatchdog command line: flags, configuration errors and start-up failures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers import Watchdog, base_environment, free_port, run_watchdog
from watchdog import __version__
from watchdog.config import OPTIONS


def test_version_flag(tmp_path: Path) -> None:
    result = run_watchdog(base_environment(tmp_path), "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fwatchdog {__version__}"


def test_help_lists_every_option(tmp_path: Path) -> None:
    result = run_watchdog(base_environment(tmp_path), "--help")
    assert result.returncode == 0
    for option in OPTIONS:
        assert f"  {option.name} (" in result.stdout, option.name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, "fprocess is missing", id="missing-fprocess"),
        pytest.param(
            {"fprocess": "cat", "max_inflight": "-1"},
            "max_inflight has the invalid value '-1': expected a whole number",
            id="negative-inflight",
        ),
        pytest.param(
            {"fprocess": "cat", "WATCHDOG_EXEC_TIMEOUT": "soon"},
            "WATCHDOG_EXEC_TIMEOUT has the invalid value 'soon'",
            id="prefixed-timeout",
        ),
        pytest.param(
            {"fprocess": "cat", "port": "ünicode"},
            "port has the invalid value 'ünicode'",
            id="non-ascii-port",
        ),
    ],
)
def test_invalid_configuration_exits_2_with_one_line(
    tmp_path: Path, settings: dict[str, str], expected: str
) -> None:
    environment = base_environment(tmp_path) | settings
    result = run_watchdog(environment)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_prints_settings_with_token_masked(tmp_path: Path) -> None:
    environment = base_environment(tmp_path) | {"fprocess": "cat", "auth_token": "s3cret"}
    result = run_watchdog(environment, "--check-config")
    assert result.returncode == 0
    assert "fprocess=cat" in result.stdout.splitlines()
    assert "auth_token=****" in result.stdout.splitlines()
    assert "s3cret" not in result.stdout


def test_check_config_rejects_invalid(tmp_path: Path) -> None:
    environment = base_environment(tmp_path) | {"fprocess": "cat", "port": "x"}
    result = run_watchdog(environment, "--check-config")
    assert result.returncode == 2
    assert "port has the invalid value 'x'" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_busy_port_stops_start_up(tmp_path: Path, workers: str) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        environment = base_environment(tmp_path) | {
            "fprocess": "cat",
            "port": str(port),
            "metrics_port": str(free_port()),
            "workers": workers,
        }
        result = run_watchdog(environment)
    assert result.returncode == 2
    assert f"Failed to listen on port {port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Started worker" not in result.stderr


def test_start_up_logs_settings(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat", max_inflight="3", auth_token="s3cret")
    log = watchdog.log()
    assert "max_inflight=3" in log
    assert "auth_token=****" in log
    assert "s3cret" not in log
