"""The PyInstaller executable from scripts/build-binary, run with no Python environment around it.

The module builds the executable once. Each test starts it with a minimal environment (no
PYTHONPATH, PATH without the virtual environment) on free loopback ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import watchdog
from tests.helpers import Watchdog, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-binary"
# A PATH with the system's tools only, so nothing can come from the virtual environment.
SYSTEM_PATH = "/usr/bin:/bin"

# Modules that uvicorn imports by name at run time, so PyInstaller's import scan misses them
# unless build-binary names them, and the packages that fwatchdog imports directly.
REQUIRED_MODULES = [
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.loops.asyncio",
    "uvicorn.lifespan.off",
    "httptools.parser",
    "prometheus_client",
    "starlette.applications",
    "watchdog.cli",
]


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the one-file executable into a temp folder and return its path."""
    output = tmp_path_factory.mktemp("binary")
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--dist", str(output / "dist"), "--work", str(output / "work")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"build-binary failed:\n{result.stdout}\n{result.stderr}"
    path = output / "dist" / "fwatchdog"
    assert path.is_file(), f"build-binary did not write {path}"
    return path


@pytest.fixture
def start_binary(executable: Path, tmp_path: Path) -> Iterator[Watchdog.Factory]:
    """Start the executable with the given settings; each one is stopped after the test."""
    started: list[Watchdog] = []

    def start(**settings: str) -> Watchdog:
        server = Watchdog.start(
            tmp_path / f"server{len(started)}",
            settings,
            command=[str(executable)],
            path=SYSTEM_PATH,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _extraction_folders(tmpdir: Path) -> list[Path]:
    """Return the folders that the one-file bootloader unpacked itself into."""
    return [path for path in tmpdir.iterdir() if path.name.startswith("_MEI")]


def test_binary_prints_version(executable: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(executable), "--version"],
        env={"PATH": SYSTEM_PATH, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fwatchdog {watchdog.__version__}"


def test_binary_bundles_dynamic_imports(executable: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller.utils.cliutils.archive_viewer",
            "--recursive",
            "--brief",
            str(executable),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bundled = {line.strip() for line in result.stdout.splitlines()}
    for module in REQUIRED_MODULES:
        assert module in bundled, f"{module} is missing from the executable"
    assert "uvloop" not in bundled
    assert "yaml" not in bundled


def test_binary_echoes_body(start_binary: Watchdog.Factory) -> None:
    server = start_binary()
    with server.client() as client:
        response = client.post("/", content=b"hello from the binary")
    assert response.status_code == 200
    assert response.content == b"hello from the binary"


def test_binary_serves_metrics(start_binary: Watchdog.Factory) -> None:
    server = start_binary()
    with server.client() as client:
        client.post("/", content=b"x")
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'http_requests_total{code="200",method="post"} 1.0' in metrics.text


def test_binary_exec_timeout_gives_408(start_binary: Watchdog.Factory) -> None:
    server = start_binary(fprocess="sleep 10", exec_timeout="500ms")
    with server.client() as client:
        response = client.post("/")
    assert response.status_code == 408
    assert response.text == "Killed process.\n"


def test_binary_max_inflight_gives_429(start_binary: Watchdog.Factory) -> None:
    # The function marks that it started, then keeps its slot until the test creates `release`.
    hold = 'touch "$TMPDIR/started"; while [ ! -e "$TMPDIR/release" ]; do sleep 0.02; done'
    server = start_binary(fprocess=f"sh -c '{hold}; echo done'", max_inflight="1")
    results: list[httpx.Response] = []

    def first_request() -> None:
        with server.client() as client:
            results.append(client.post("/"))

    worker = threading.Thread(target=first_request)
    worker.start()
    try:
        wait_until((server.tmpdir / "started").exists, 10, "the first request to start")
        with server.client() as client:
            rejected = client.post("/")
    finally:
        (server.tmpdir / "release").touch()
        worker.join(20)
    assert rejected.status_code == 429
    assert results[0].status_code == 200
    assert results[0].text == "done\n"


def test_binary_health_follows_lock_file(start_binary: Watchdog.Factory, executable: Path) -> None:
    server = start_binary()
    probe_environment = {"PATH": SYSTEM_PATH, "TMPDIR": str(server.tmpdir)}

    def run_healthcheck() -> int:
        probe = subprocess.run(
            [str(executable), "--run-healthcheck"],
            env=probe_environment,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return probe.returncode

    with server.client() as client:
        healthy = client.get("/_/health")
        healthy_probe = run_healthcheck()
        server.lock_path.unlink()
        removed = client.get("/_/health")
        removed_probe = run_healthcheck()
    assert healthy.status_code == 200
    assert healthy.text == "OK"
    assert healthy_probe == 0
    assert removed.status_code == 503
    assert removed_probe == 1


def test_binary_sigterm_drains_and_exits_zero(start_binary: Watchdog.Factory) -> None:
    server = start_binary(healthcheck_interval="1s")
    assert _extraction_folders(server.tmpdir)
    server.signal(signal.SIGTERM)

    def health_status() -> int:
        return httpx.get(f"{server.url}/_/health", timeout=5).status_code

    # During healthcheck_interval the listener still accepts requests, and health returns 503.
    wait_until(lambda: health_status() == 503, 5, "health to answer 503 after SIGTERM")
    assert server.wait_exit(20) == 0
    assert "Watchdog stopped" in server.log()
    assert _extraction_folders(server.tmpdir) == []


def test_binary_sigterm_without_interval(start_binary: Watchdog.Factory) -> None:
    server = start_binary(healthcheck_interval="0s")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, None, id="unset"),
        pytest.param({"LD_LIBRARY_PATH": "/opt/lib"}, "/opt/lib", id="set-by-caller"),
    ],
)
def test_binary_function_environment_is_clean(
    start_binary: Watchdog.Factory, settings: dict[str, str], expected: str | None
) -> None:
    server = start_binary(fprocess="env", cgi_headers="false", **settings)
    with server.client() as client:
        response = client.post("/")
    assert response.status_code == 200
    variables = dict(line.split("=", 1) for line in response.text.splitlines() if "=" in line)
    assert variables.get("LD_LIBRARY_PATH") == expected
    assert "LD_LIBRARY_PATH_ORIG" not in variables
    assert [name for name in variables if name.startswith("_PYI")] == []
    assert "_MEI" not in response.text
