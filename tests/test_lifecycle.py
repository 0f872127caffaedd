"""Health, the lock file, graceful shutdown and PID 1 duties of the real server."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import Watchdog, base_environment, children, run_watchdog, wait_until


def test_lock_file_written_and_health_follows_it(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog()
    assert watchdog.lock_path.exists()
    assert watchdog.lock_path.read_bytes() == b""
    with watchdog.client() as client:
        healthy = client.get("/_/health")
        watchdog.lock_path.unlink()
        removed = client.get("/_/health")
        watchdog.lock_path.touch()
        restored = client.get("/_/health")
    assert healthy.status_code == 200
    assert healthy.text == "OK"
    assert removed.status_code == 503
    assert removed.content == b""
    assert restored.status_code == 200


def test_suppress_lock_writes_none_and_is_healthy(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(suppress_lock="true")
    with watchdog.client() as client:
        response = client.get("/_/health")
    assert response.status_code == 200
    assert not watchdog.lock_path.exists()


def test_health_is_exact_path_and_never_forks(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'echo function; echo ran >> $TMPDIR/ran'")
    with watchdog.client() as client:
        health = client.get("/_/health")
        post = client.post("/_/health")
        slash = client.get("/_/health/")
    assert health.text == "OK"
    assert post.status_code == 405
    assert post.headers["allow"] == "GET"
    assert slash.text == "function\n"
    assert (watchdog.tmpdir / "ran").read_text() == "ran\n"


def test_unwritable_lock_file_stops_start_up(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    (tmpdir / ".lock").mkdir(parents=True)  # a directory where the file must go
    environment = base_environment(tmpdir) | {"fprocess": "cat", "port": "0", "metrics_port": "0"}
    result = run_watchdog(environment)
    assert result.returncode == 2
    assert str(tmpdir / ".lock") in result.stderr
    assert "suppress_lock=true" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_healthcheck_follows_lock_file(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog()
    environment = base_environment(watchdog.tmpdir)
    present = run_watchdog(environment, "--run-healthcheck")
    watchdog.lock_path.unlink()
    missing = run_watchdog(environment, "--run-healthcheck")
    assert present.returncode == 0
    assert missing.returncode == 1


def test_run_healthcheck_reads_no_other_configuration(tmp_path: Path) -> None:
    (tmp_path / ".lock").touch()
    environment = base_environment(tmp_path) | {"max_inflight": "invalid"}
    assert run_watchdog(environment, "--run-healthcheck").returncode == 0


def _post_in_thread(
    watchdog: Watchdog, results: list[httpx.Response], path: str
) -> threading.Thread:
    def post() -> None:
        with watchdog.client() as client:
            results.append(client.post(path))

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_and_serves_interval(start_watchdog: Watchdog.Factory) -> None:
    script = 'echo $$ > $TMPDIR/pids; if [ "$Http_Path" = /slow ]; then sleep 3; fi; echo done'
    watchdog = start_watchdog(
        fprocess=f"sh -c '{script}'", healthcheck_interval="1s", write_timeout="10s"
    )
    results: list[httpx.Response] = []
    slow = _post_in_thread(watchdog, results, "/slow")
    wait_until(lambda: (watchdog.tmpdir / "pids").exists(), 10, "the slow request to start")
    signalled = time.monotonic()
    watchdog.signal(signal.SIGTERM)
    watchdog.wait_log("Received SIGTERM: health now returns 503, 1 requests in flight")
    with watchdog.client() as client:
        health = client.get("/_/health")
        during = client.get("/quick")
    assert health.status_code == 503
    assert not watchdog.lock_path.exists()
    assert during.status_code == 200  # new requests are still served during the interval

    watchdog.wait_log("Closing the listener: waiting up to 10s for 1 requests in flight")
    wait_until(lambda: _refused(watchdog.port), 5, "the listener to close")
    assert slow.is_alive()  # the slow request is still being served

    slow.join(15)
    assert watchdog.wait_exit(15) == 0
    assert time.monotonic() - signalled < 1 + 10
    assert len(results) == 1
    assert results[0].status_code == 200
    assert "All requests in flight finished" in watchdog.log()


def test_second_signal_answers_503_and_kills(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(
        fprocess=str(functions / "slow.sh"), healthcheck_interval="60s", write_timeout="60s"
    )
    results: list[httpx.Response] = []
    slow = _post_in_thread(watchdog, results, "/")
    wait_until(lambda: (watchdog.tmpdir / "pids").exists(), 10, "the slow request to start")
    pid = int((watchdog.tmpdir / "pids").read_text())
    watchdog.signal(signal.SIGTERM)
    watchdog.wait_log("Received SIGTERM")
    watchdog.signal(signal.SIGINT)
    slow.join(15)
    assert watchdog.wait_exit(15) == 0
    assert results[0].status_code == 503
    assert "shutting down" in results[0].text
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5, "the function process to die")


def test_drain_bounded_by_write_timeout(start_watchdog: Watchdog.Factory, functions: Path) -> None:
    watchdog = start_watchdog(
        fprocess=str(functions / "slow.sh"), healthcheck_interval="0s", write_timeout="1s"
    )
    results: list[httpx.Response] = []
    slow = _post_in_thread(watchdog, results, "/")
    wait_until(lambda: (watchdog.tmpdir / "pids").exists(), 10, "the slow request to start")
    signalled = time.monotonic()
    watchdog.signal(signal.SIGTERM)
    slow.join(15)
    assert watchdog.wait_exit(15) == 0
    assert time.monotonic() - signalled < 1 + 5
    # The request's own write_timeout ends before the drain does, so it gets 504, not 503.
    assert results[0].status_code == 504


def test_sigint_skips_healthcheck_interval(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(healthcheck_interval="60s")
    started = time.monotonic()
    watchdog.signal(signal.SIGINT)
    assert watchdog.wait_exit(15) == 0
    assert time.monotonic() - started < 10
    assert "healthcheck_interval" not in watchdog.log().split("Received SIGINT")[1]


def test_busy_metrics_port_stops_before_serving(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        metrics_port = busy.getsockname()[1]
        environment = base_environment(tmp_path) | {
            "fprocess": "cat",
            "port": "0",
            "metrics_port": str(metrics_port),
        }
        result = run_watchdog(environment)
    assert result.returncode == 2
    assert f"Failed to listen on metrics_port {metrics_port}" in result.stderr
    assert "Listening on" not in result.stderr
    assert not (tmp_path / ".lock").exists()


def test_no_zombies_from_background_processes(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(fprocess=str(functions / "background_sleep.sh"))
    with watchdog.client() as client:
        statuses = {client.post("/").status_code for _ in range(200)}
    assert statuses == {200}

    def no_zombies() -> bool:
        return not [pid for pid, state in children(watchdog.process.pid) if state == "Z"]

    wait_until(no_zombies, 10, "zombie children to be reaped")
    # Each sleep runs in its own session, so it outlived its request and was re-parented to the
    # watchdog, which stops it at exit.
    assert len(children(watchdog.process.pid)) == 200
    assert watchdog.stop() == 0
    assert "Stopped 200 orphaned processes" in watchdog.log()
    wait_until(lambda: not children(watchdog.process.pid), 10, "orphans to be stopped")


def test_json_log_lines(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(log_format="json")
    with watchdog.client() as client:
        client.post("/", content=b"x")
    watchdog.stop()
    lines = watchdog.log().splitlines()
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(record["logger"] == "watchdog.access" for record in records)
