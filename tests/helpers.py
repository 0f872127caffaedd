"""Start and stop a real fwatchdog process for tests, and wait on conditions with deadlines."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

T = TypeVar("T")

START_TIMEOUT = 15.0


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
    """Poll `condition` until it returns a true value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(0.01)


def children(pid: int) -> list[tuple[int, str]]:
    """Return (pid, state) of each child of `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(entry.name), fields[0].decode()))
    return found


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the end of the headers: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def base_environment(tmpdir: Path) -> dict[str, str]:
    """A small, predictable environment for a watchdog under test."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmpdir),
        "PYTHONUNBUFFERED": "1",
    }
    # Lets coverage measure the watchdog processes that the tests start.
    environment.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    return environment


def run_watchdog(
    environment: dict[str, str], *arguments: str, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run fwatchdog to completion, for commands and configurations that exit by themselves."""
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclasses.dataclass
class Watchdog:
    """A running fwatchdog process and the paths that belong to it."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    tmpdir: Path
    log_path: Path

    class Factory(Protocol):
        def __call__(self, **settings: str) -> Watchdog: ...

    @classmethod
    def start(
        cls,
        directory: Path,
        settings: dict[str, str],
        *,
        command: list[str] | None = None,
        path: str | None = None,
        wait: bool = True,
    ) -> Watchdog:
        """Start fwatchdog with `settings` as environment variables and wait until it listens.

        `command` replaces `python -m watchdog` (for the built executable), and `path`
        replaces the PATH of the test run.
        """
        tmpdir = directory / "tmp"
        tmpdir.mkdir(parents=True)
        environment = base_environment(tmpdir)
        if path is not None:
            environment["PATH"] = path
        environment.setdefault("fprocess", "cat")
        port = free_port()
        metrics_port = free_port()
        while metrics_port == port:  # the kernel may hand out the same free port twice
            metrics_port = free_port()
        environment["port"] = str(port)
        environment["metrics_port"] = str(metrics_port)
        environment.update(settings)
        log_path = directory / "watchdog.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command or [sys.executable, "-m", "watchdog"],
                env=environment,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        watchdog = cls(
            process, int(environment["port"]), int(environment["metrics_port"]), tmpdir, log_path
        )
        if wait:
            watchdog.wait_listening()
        return watchdog

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lock_path(self) -> Path:
        return self.tmpdir / ".lock"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"fwatchdog exited with {self.process.returncode}:\n{self.log()}"
                )
            return "Listening on" in self.log()

        wait_until(listening, START_TIMEOUT, "fwatchdog to listen")

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in the log")

    def client(self, **options: object) -> httpx.Client:
        options.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **options)  # type: ignore[arg-type]

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """Stop with SIGINT (no healthcheck wait); kill the group if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
                raise AssertionError(f"fwatchdog did not stop on SIGINT:\n{self.log()}") from None
        return self.process.returncode
