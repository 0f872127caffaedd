"""Start and stop the processes of a run: the watchdog under test and the harness's helpers.

Every process is started through ``start_process`` and stopped by its pid. The harness makes
itself a child subreaper, so that processes orphaned by a server (for example a function's
background grandchild) become its children and are killed and reaped when the server stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import procfs

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_CHILD_SUBREAPER = 36
_POLL_INTERVAL_S = 0.02

# Processes started by this harness that it still has to stop or wait for, by pid.
_started: dict[int, subprocess.Popen[bytes]] = {}


class ServerError(RuntimeError):
    """A server or helper process that failed to start, respond or stop."""


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children. Return whether that worked."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on the loopback address just now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process and remember its pid so that ``stop_process`` and cleanup find it."""
    proc = subprocess.Popen(list(args), env=env, stdout=stdout, stderr=stderr)
    _started[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """Send SIGTERM to the process by pid, wait up to ``timeout_s``, then SIGKILL it.

    Returns the exit code, the last signal sent and the seconds the stop took.
    """
    started = time.monotonic()
    signal_sent = None
    if proc.poll() is None:
        signal_sent = "SIGTERM"
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_sent = "SIGKILL"
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
    _started.pop(proc.pid, None)
    return {
        "exit_code": proc.returncode,
        "signal": signal_sent,
        "stop_s": round(time.monotonic() - started, 3),
    }


def _wait_for_exit(pid: int, timeout_s: float) -> None:
    """Reap a child that was sent SIGKILL, waiting at most ``timeout_s`` for it to exit."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], timeout_s)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        os.close(pidfd)


def kill_orphans(timeout_s: float = 5.0) -> list[int]:
    """Kill and reap the children of the harness that it did not start itself.

    These are descendants of a stopped server or helper, reparented here because the harness
    is a child subreaper. Returns their pids.
    """
    orphans = [pid for pid in procfs.children_of(os.getpid()) if pid not in _started]
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in orphans:
        _wait_for_exit(pid, timeout_s)
    return orphans


def stop_all(timeout_s: float) -> None:
    """Stop every process this harness started and has not stopped yet, then the orphans."""
    for proc in list(_started.values()):
        stop_process(proc, timeout_s)
    kill_orphans()


def helper_env() -> dict[str, str]:
    """Return the environment for the harness's helper processes, with ``bench`` importable."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_command(
    command: Sequence[str], env: Mapping[str, str], timeout_s: float
) -> tuple[int, bytes, bytes]:
    """Run a command to completion and return its exit code, stdout and stderr.

    Raises ServerError if it runs longer than ``timeout_s``, after stopping it.
    """
    proc = start_process(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        stop_process(proc, 5.0)
        raise ServerError(f"{command[0]} timed out after {timeout_s} s") from error
    _started.pop(proc.pid, None)
    return proc.returncode, stdout, stderr


def run_helper(module: str, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m bench.MODULE ARGS`` and return the JSON object it prints last."""
    command = [sys.executable, "-m", f"bench.{module}", *args]
    returncode, stdout, stderr = run_command(command, helper_env(), timeout_s)
    if returncode != 0:
        message = stderr.decode(errors="replace").strip()[-2000:]
        raise ServerError(f"helper bench.{module} failed with exit code {returncode}: {message}")
    return dict(json.loads(stdout.decode().strip().splitlines()[-1]))


def probe_http(port: int, timeout_s: float = 1.0) -> int | None:
    """Send ``GET /_/health`` and return the status code of any HTTP response, else None."""
    request = f"GET /_/health HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            sock.sendall(request.encode())
            head = sock.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def wait_until_http(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> int:
    """Wait until ``port`` sends any HTTP response, and return its status code.

    Raises ServerError when the process exits or ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status = probe_http(port)
        if status is not None:
            return status
        if time.monotonic() > deadline:
            raise ServerError(f"no HTTP response on port {port} within {timeout_s} s")
        # Waiting on the process doubles as the poll interval and notices an early exit.
        try:
            proc.wait(timeout=_POLL_INTERVAL_S)
        except subprocess.TimeoutExpired:
            continue
        raise ServerError(f"the server exited with code {proc.returncode} before responding")


@dataclass(frozen=True)
class ServerSpec:
    """A watchdog under test: its key in the results ("A" or "B") and its command."""

    key: str
    command: tuple[str, ...]


@dataclass
class RunningServer:
    """A started watchdog with its own TMPDIR and log file, stopped by ``stop``.

    ``settings`` are the watchdog's environment variables for the scenario. The server also
    gets the harness's environment, ``port``, ``metrics_port`` and a fresh ``TMPDIR``.
    """

    spec: ServerSpec
    settings: Mapping[str, str]
    function_comm: str | None
    ready_timeout_s: float
    stop_timeout_s: float
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        """Start the server and wait until it sends an HTTP response on its port."""
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
        tmpdir = self.workdir / "tmp"
        tmpdir.mkdir()
        self.port, metrics_port = free_ports(2)
        env = dict(os.environ)
        env.update(self.settings)
        env.update({"port": str(self.port), "metrics_port": str(metrics_port)})
        env["TMPDIR"] = str(tmpdir)

        started = time.monotonic()
        with open(self.workdir / "server.log", "wb") as log:
            self.proc = start_process(self.spec.command, env=env, stdout=log, stderr=log)
        try:
            status = wait_until_http(self.proc, self.port, self.ready_timeout_s)
        except ServerError as error:
            tail = self.log_tail() or "(empty)"
            raise ServerError(f"{error}. Server log:\n{tail}") from error
        self.info = {
            "pid": self.proc.pid,
            "ready_s": round(time.monotonic() - started, 3),
            "health_status": status,
            "environment": dict(self.settings),
        }

    def stop(self) -> None:
        """Stop the server by pid, kill what it left behind and remove its directory."""
        if self.proc is not None:
            self.info["stop"] = stop_process(self.proc, self.stop_timeout_s)
            self.info["orphans_killed"] = len(kill_orphans())
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError("the server is not running")
        return self.proc.pid

    def log_tail(self, max_bytes: int = 4000) -> str:
        """Return the end of the server's combined stdout and stderr."""
        if self.workdir is None:
            return ""
        try:
            data = (self.workdir / "server.log").read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def __enter__(self) -> RunningServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
