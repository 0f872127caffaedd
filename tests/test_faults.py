"""Faults while serving: SIGTERM under load, a vanished fprocess, a full or read-only temp dir,
no file descriptors left, and a function that floods stderr."""

from __future__ import annotations

import itertools
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Watchdog, read_response, wait_until
from tests.soak.driver import Profile, SoakRun, server_settings
from tests.soak.procfs import children, open_descriptors
from tests.soak.workload import MiB, Outcome, Payloads, make_plan
from watchdog.responses import STDERR_LOG_LIMIT

FUNCTIONS = Path(__file__).parent / "functions"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


# SIGTERM in the middle of the soak

HEALTHCHECK_INTERVAL = 1.0
WRITE_TIMEOUT = 4.0
# A request started this long before the listener closed was certainly read by the server.
ACCEPT_MARGIN = 0.5


class ListenerProbe:
    """Connect every few milliseconds to find when the listener stopped accepting."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.last_accepted = 0.0
        self.first_refused: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            attempted = time.monotonic()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            except ConnectionRefusedError:
                self.first_refused = time.monotonic()
                return
            except OSError:
                continue
            self.last_accepted = attempted
            time.sleep(0.005)  # pacing of the probe, not a wait for a condition


def _clean_failure(outcome: Outcome) -> bool:
    """True for a request that got no byte of a response and no half-read one."""
    return outcome.status is None and outcome.response_bytes == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_during_soak_drains_and_exits(
    start_watchdog: Watchdog.Factory, tmp_path: Path
) -> None:
    profile = Profile(requests=20000, connections=32, seed=11, max_body=4 * MiB)
    payloads = Payloads(tmp_path, profile.seed, profile.max_body)
    watchdog = start_watchdog(
        **server_settings(
            payloads,
            healthcheck_interval=f"{HEALTHCHECK_INTERVAL:g}s",
            write_timeout=f"{WRITE_TIMEOUT:g}s",
        )
    )
    run = SoakRun(watchdog, payloads, profile)
    stop = threading.Event()
    answered = threading.Semaphore(0)
    refusals = itertools.count(1)
    outcomes: list[Outcome] = []

    def count(outcome: Outcome) -> None:
        if outcome.status is not None:
            answered.release()
        refused = outcome.error and outcome.error.startswith("ConnectionRefusedError")
        if refused and next(refusals) >= 100:
            stop.set()  # the listener is closed: further attempts would show nothing new

    workload = threading.Thread(
        target=lambda: outcomes.extend(
            run.run_requests(
                make_plan(profile.requests, profile.seed, profile.max_body),
                stop=stop,
                on_outcome=count,
            )
        )
    )
    workload.start()
    try:
        for _ in range(300):
            assert answered.acquire(timeout=30), "the workload stalled before SIGTERM"
        probe = ListenerProbe(watchdog.port)
        signalled = time.monotonic()
        watchdog.signal(signal.SIGTERM)
        probe.start()
        exit_code = watchdog.wait_exit(HEALTHCHECK_INTERVAL + WRITE_TIMEOUT + 10)
        exited = time.monotonic()
        probe.join()
    finally:
        stop.set()
        workload.join(60)

    assert exit_code == 0
    assert exited - signalled < HEALTHCHECK_INTERVAL + WRITE_TIMEOUT
    assert probe.first_refused is not None
    assert probe.first_refused - signalled >= HEALTHCHECK_INTERVAL  # served during the interval
    closed = probe.last_accepted
    assert closed > signalled

    accepted = [outcome for outcome in outcomes if outcome.started < closed - ACCEPT_MARGIN]
    late = [outcome for outcome in outcomes if outcome.started >= closed - ACCEPT_MARGIN]
    assert len(accepted) > 300
    drained = [o for o in accepted if o.started < signalled < o.finished and o.status is not None]
    assert drained, "no request was in flight at SIGTERM"
    assert [o for o in accepted if o.request.action != "abort_upload" and o.status is None] == []
    assert [o for o in outcomes if o.problem is not None] == []
    assert [o for o in late if o.status is None and not _clean_failure(o)] == []
    refused = [o for o in late if o.error and o.error.startswith("ConnectionRefusedError")]
    assert refused, "no request was refused after the listener closed"
    assert [o for o in outcomes if o.error and o.error.startswith("TimeoutError")] == []
    assert "Traceback" not in watchdog.log()
    assert run.finish() == []


# fprocess removed or made non-executable


def test_fprocess_removed_or_not_executable(
    start_watchdog: Watchdog.Factory, tmp_path: Path
) -> None:
    script = tmp_path / "handler.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    watchdog = start_watchdog(fprocess=str(script), max_inflight="1")
    with watchdog.client() as client:
        before = client.post("/")
        script.chmod(0o644)
        not_executable = client.post("/")
        script.chmod(0o755)
        restored = client.post("/")
        script.unlink()
        removed = client.post("/")
        health = client.get("/_/health")
        script.write_text("#!/bin/sh\necho back\n")
        script.chmod(0o755)
        recreated = client.post("/")

    assert before.text == "hi\n"
    assert not_executable.status_code == 500
    assert not_executable.text == f"Failed to start process {str(script)!r}: Permission denied\n"
    assert restored.text == "hi\n"
    assert removed.status_code == 500
    assert removed.text == f"Failed to start process {str(script)!r}: No such file or directory\n"
    assert health.status_code == 200
    assert recreated.text == "back\n"
    assert children(watchdog.process.pid) == []
    assert "Traceback" not in watchdog.log()


# The temp dir full or read-only while output is spooled

SPOOL_FUNCTION = (
    'echo $$ > "$PIDS_FILE"; '
    'case "$Http_Path" in '
    "/big) head -c 4194304 /dev/zero; exec sleep 30 ;; "
    # 2 MiB fill a 2 MiB tmpfs exactly; the last byte arrives alone, as a small buffered write.
    "/tail) head -c 2097152 /dev/zero; sleep 0.2; printf x; exec sleep 30 ;; "
    "*) echo small ;; esac"
)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: the temp dir of a watchdog that runs out of space."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _statvfs_free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bfree * info.f_frsize


@pytest.mark.parametrize(
    ("path", "remount", "reason"),
    [
        pytest.param("/big", None, "No space left on device", id="full"),
        pytest.param("/tail", None, "No space left on device", id="full-at-last-byte"),
        pytest.param("/big", "ro", "Read-only file system", id="read-only"),
    ],
)
def test_temp_dir_full_gives_507_and_kills(
    small_tmpfs: Path,
    start_watchdog: Watchdog.Factory,
    tmp_path: Path,
    path: str,
    remount: str | None,
    reason: str,
) -> None:
    pids_file = tmp_path / "pids"
    watchdog = start_watchdog(
        fprocess=f"sh -c '{SPOOL_FUNCTION}'",
        TMPDIR=str(small_tmpfs),
        PIDS_FILE=str(pids_file),
        max_inflight="1",
    )
    free = _statvfs_free(small_tmpfs)
    if remount:
        subprocess.run(["mount", "-o", f"remount,{remount}", str(small_tmpfs)], check=True)
    with watchdog.client() as client:
        started = time.monotonic()
        failed = client.post(path)
        elapsed = time.monotonic() - started
        pid = int(pids_file.read_text())
        after = client.post("/small")

    assert failed.status_code == 507
    assert failed.text == f"Failed to store the function output: {reason}\n"
    assert elapsed < 5, "the process was not killed when its output could not be stored"
    wait_until(lambda: not _alive(pid), 5, "the function process to be killed")
    assert after.text == "small\n"  # the only slot was freed
    assert sorted(entry.name for entry in small_tmpfs.iterdir()) == [".lock"]
    assert _statvfs_free(small_tmpfs) == free
    assert [t for t in open_descriptors(watchdog.process.pid) if "tmpfs" in t] == []
    assert watchdog.stop() == 0  # even when the lock file cannot be removed
    assert "Traceback" not in watchdog.log()


# Out of file descriptors


def _health(connection: socket.socket, timeout: float = 10.0) -> bytes:
    connection.settimeout(timeout)
    connection.sendall(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = read_response(connection)
    return head.split(b"\r\n")[0] + b" " + body


def _post(connection: socket.socket, body: bytes) -> tuple[bytes, bytes]:
    connection.settimeout(10)
    connection.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return read_response(connection)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.slow
def test_out_of_descriptors_503_then_recovers(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat")
    pid = watchdog.process.pid
    idle = len(open_descriptors(pid))
    with httpx.Client(base_url=watchdog.url) as client:
        assert client.post("/", content=b"warm").text == "warm"
    wait_until(lambda: len(open_descriptors(pid)) == idle, 10, "the idle descriptors")
    descriptors = [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")]
    # Room for five connections: with all five open nothing is left for the two pipes of a
    # spawn, and with only one open there is room for them.
    limit = len(descriptors) + 5
    assert max(descriptors) < limit
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))

    first = _connect(watchdog.port)
    extra = [_connect(watchdog.port) for _ in range(4)]
    waiting: socket.socket | None = None
    try:
        for connection in [first, *extra]:
            assert _health(connection) == b"HTTP/1.1 200 OK OK"
        head, body = _post(first, b"data")
        assert head.startswith(b"HTTP/1.1 503")
        assert body == b"Failed to start process 'cat': Too many open files\n"

        waiting = _connect(watchdog.port)  # the kernel completes it; the server cannot accept
        waiting.sendall(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.settimeout(1.5)
        with pytest.raises(TimeoutError):
            waiting.recv(1)
        assert watchdog.process.poll() is None
        assert _health(first) == b"HTTP/1.1 200 OK OK"

        for connection in extra:
            connection.close()
        head, body = read_response(waiting)  # accepted once descriptors are free again
        assert head.startswith(b"HTTP/1.1 200")
        waiting.close()
        waiting = None

        def served() -> bool:
            head, body = _post(first, b"again")
            return head.startswith(b"HTTP/1.1 200") and body == b"again"

        wait_until(served, 10, "a function request to succeed again")
    finally:
        for connection in [first, *extra]:
            connection.close()
        if waiting is not None:
            waiting.close()
    assert watchdog.process.poll() is None
    assert children(pid) == []
    log = watchdog.log()
    assert "Traceback" not in log
    assert 1 <= log.count("Failed to accept connections (Too many open files)") <= 20


# A function that floods stderr with combine_output=false


def test_stderr_flood_is_capped_in_log(start_watchdog: Watchdog.Factory) -> None:
    flood = 8 * MiB
    watchdog = start_watchdog(
        fprocess=str(FUNCTIONS / "soak_function.sh"),
        combine_output="false",
        SOAK_STDERR_BYTES=str(flood),
    )
    results: list[httpx.Response] = []

    def request() -> None:
        with watchdog.client() as client:
            results.append(client.post("/stderr"))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert [response.text for response in results] == ["flooded\n"] * 4
    watchdog.wait_log(f"({flood - STDERR_LOG_LIMIT} more bytes not logged)")
    records = [line for line in watchdog.log().splitlines() if "Function stderr of" in line]
    assert len(records) == 4
    for record in records:
        text, _, suffix = record.split("Function stderr of POST /stderr: ", 1)[1].partition(" ")
        assert text == "e" * STDERR_LOG_LIMIT
        assert suffix == f"({flood - STDERR_LOG_LIMIT} more bytes not logged)"
    assert watchdog.log_path.stat().st_size < 4 * STDERR_LOG_LIMIT + 16 * 1024
