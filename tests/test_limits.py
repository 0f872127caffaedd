"""Timeouts, max_inflight and disconnects against the real server, with real processes."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import Watchdog, read_response, wait_until


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def _recorded_pids(watchdog: Watchdog) -> list[int]:
    path = watchdog.tmpdir / "pids"
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= 1, 10, "pids file")
    return [int(pid) for pid in path.read_text().split()]


def test_exec_timeout_kills_group_quickly(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(fprocess=str(functions / "hold_stdout.sh"), exec_timeout="1")
    with watchdog.client() as client:
        started = time.monotonic()
        response = client.post("/")
        elapsed = time.monotonic() - started
    assert response.status_code == 408
    assert response.text == "Killed process.\n"
    assert 1.0 <= elapsed < 1.25 + 0.25  # the deadline, its allowance and some client overhead
    pids = _recorded_pids(watchdog)
    assert len(pids) == 2
    wait_until(lambda: not any(_alive(pid) for pid in pids), 5, "function processes to die")


def test_exec_timeout_accepts_go_duration(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="sleep 5", exec_timeout="300ms")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 408


def test_write_timeout_gives_504(start_watchdog: Watchdog.Factory, functions: Path) -> None:
    watchdog = start_watchdog(fprocess=str(functions / "slow.sh"), write_timeout="1")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 504
    assert "write_timeout" in response.text
    pid = _recorded_pids(watchdog)[0]
    wait_until(lambda: not _alive(pid), 5, "function process to die")


def test_read_timeout_on_slow_body_gives_408(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat", read_timeout="1")
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        head, body = read_response(connection)
    assert head.startswith(b"HTTP/1.1 408")
    assert body == b"Timed out reading the request body: read_timeout is 1s\n"


def test_max_inflight_rejects_with_429(start_watchdog: Watchdog.Factory, functions: Path) -> None:
    watchdog = start_watchdog(
        fprocess=str(functions / "slow.sh"), max_inflight="1", write_timeout="20"
    )
    results: list[httpx.Response] = []

    def slow_request() -> None:
        with watchdog.client() as client:
            results.append(client.post("/"))

    worker = threading.Thread(target=slow_request)
    worker.start()
    pid = _recorded_pids(watchdog)[0]
    with watchdog.client() as client:
        rejected = client.post("/")
        health = client.get("/_/health")
    assert rejected.status_code == 429
    assert rejected.text == "Concurrent request limit exceeded. Max concurrent requests: 1\n"
    assert rejected.headers["content-type"] == "text/plain"
    assert rejected.headers["retry-after"] == "1"
    assert health.status_code == 200

    os.kill(pid, signal.SIGKILL)
    worker.join(10)
    assert results[0].status_code == 500


def test_slot_released_after_start_failure(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="/nonexistent/handler", max_inflight="1", write_debug="true")
    with watchdog.client() as client:
        statuses = [client.post("/").status_code for _ in range(5)]
    assert statuses == [500] * 5


def test_slot_released_after_each_outcome(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(
        fprocess=f"{functions / 'fail.sh'} 3", max_inflight="1", write_debug="true"
    )
    with watchdog.client() as client:
        statuses = [client.post("/").status_code for _ in range(5)]
    assert statuses == [500] * 5


def test_client_disconnect_kills_process_and_frees_slot(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'echo $$ > $TMPDIR/pids; exec cat'", max_inflight="1")
    connection = socket.create_connection(("127.0.0.1", watchdog.port), timeout=10)
    connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    pid = _recorded_pids(watchdog)[0]
    connection.close()
    wait_until(lambda: not _alive(pid), 5, "function process to die after the disconnect")
    watchdog.wait_log("Client disconnected")
    with watchdog.client() as client:
        response = client.post("/", content=b"0123456789")
    assert response.status_code == 200
    assert response.content == b"0123456789"


def test_disconnect_while_running_kills_process(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(fprocess=str(functions / "slow.sh"))
    connection = socket.create_connection(("127.0.0.1", watchdog.port), timeout=10)
    connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    pid = _recorded_pids(watchdog)[0]
    connection.close()
    wait_until(lambda: not _alive(pid), 5, "function process to die after the disconnect")


def test_slot_released_on_every_path(start_watchdog: Watchdog.Factory) -> None:
    script = 'case "$Http_Path" in /timeout) exec sleep 30;; /fail) exit 4;; esac; cat'
    watchdog = start_watchdog(
        fprocess=f"sh -c '{script}'", max_inflight="1", exec_timeout="500ms", write_debug="true"
    )
    with watchdog.client() as client:
        timed_out = client.post("/timeout")
        failed = client.post("/fail")
        too_large = client.post("/", headers={"X-Big": "v" * (130 * 1024)})
        succeeded = client.post("/", content=b"still serving")
    assert timed_out.status_code == 408
    assert failed.status_code == 500
    assert too_large.status_code == 431
    assert succeeded.status_code == 200
    assert succeeded.content == b"still serving"


def test_access_log_line(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        client.post("/logged", content=b"12345")
    watchdog.wait_log("watchdog.access: POST /logged 200 ")
    line = next(line for line in watchdog.log().splitlines() if "POST /logged" in line)
    assert line.endswith(" 5 bytes")
