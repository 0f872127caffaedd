"""Several worker processes on one port, and the supervisor that starts, signals and reaps them.

With `workers` above 1, the first process becomes the supervisor. It binds the metrics port and
one listening socket per worker on the same port (SO_REUSEPORT, so the kernel spreads new
connections over the workers), then forks the workers before it starts any thread. Each worker
runs the single-process server on its socket, with its own event loop, reaper and lock-file
duties. Each writes its metrics to files in a shared directory, and the supervisor serves
their sum.
The max_inflight count is kept in shared memory, so the limit applies across workers.

The supervisor passes SIGTERM and SIGINT on to every worker, which then runs the usual shutdown
sequence; a second signal is passed on too. A worker that exits before any signal stops the
watchdog: the others get SIGTERM, and the exit status is the worker's (1 after a signal), so the
orchestrator restarts the container. A worker whose supervisor dies gets SIGHUP and stops as
after SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping
from types import FrameType
from typing import NoReturn

from prometheus_client import multiprocess

from .config import Config
from .limiter import Limiter, SharedLimiter
from .logs import tag_worker
from .metrics import Metrics, MetricsListener, shared_registry
from .reaper import Reaper, set_child_subreaper
from .server import ORPHAN_GRACE
from .serving import listen, log_busy_port, run_server

__all__ = ["supervise"]

logger = logging.getLogger("watchdog")

_PR_SET_PDEATHSIG = 1
# Sent to a worker whose supervisor died. SIGTERM and SIGINT already mean what they mean
# for one process, where a second one forces the exit.
PARENT_DEATH_SIGNAL = signal.SIGHUP
_FORWARDED = (signal.SIGTERM, signal.SIGINT)


def supervise(config: Config) -> int:
    """Run `config.workers` workers until they have all exited; return the exit status."""
    directory = tempfile.mkdtemp(prefix="fwatchdog-metrics-")
    try:
        return _supervise(config, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _supervise(config: Config, directory: str) -> int:
    try:
        metrics_listener = MetricsListener(shared_registry(directory), config.metrics_port)
    except OSError as error:
        log_busy_port("metrics_port", config.metrics_port, error)
        return 2
    try:
        listeners = _listen_all(config.port, config.workers)
    except OSError as error:
        log_busy_port("port", config.port, error)
        metrics_listener.close()
        return 2

    if set_child_subreaper():
        logger.info("Registered as child subreaper: orphaned processes are reaped here")
    limiter = SharedLimiter(config.max_inflight) if config.max_inflight else None
    # Captured before a worker sets PROMETHEUS_MULTIPROC_DIR, which functions have no use for.
    base_environment = dict(os.environb)
    supervisor = os.getpid()
    workers: dict[int, int] = {}
    for number, listener in enumerate(listeners, start=1):
        try:
            pid = os.fork()
        except OSError as error:
            logger.error(
                "Failed to start worker %d of %d (%s): stopping the %d already started",
                number, config.workers, error.strerror or error, len(workers),
            )  # fmt: skip
            return _stop_started(workers, listeners, metrics_listener, directory)
        if pid == 0:
            for other in listeners:
                if other is not listener:
                    other.close()
            metrics_listener.close()  # this process's copy of the socket only
            _run_worker(number, supervisor, config, listener, directory, limiter, base_environment)
        workers[pid] = number
        logger.info("Started worker %d of %d, pid %d", number, config.workers, pid)
    for listener in listeners:
        listener.close()
    metrics_listener.start()
    logger.info(
        "Metrics of all workers listening on http://0.0.0.0:%s/metrics", metrics_listener.port
    )
    try:
        return _Supervisor(workers, directory).wait()
    finally:
        # Closing waits for the metrics thread's next poll, up to half a second.
        metrics_listener.close()
        logger.info("Watchdog stopped: every worker has exited")


def _listen_all(port: int, count: int) -> list[socket.socket]:
    """Bind `count` SO_REUSEPORT sockets to one port; raises OSError when the port is busy.

    Another process that listens with SO_REUSEPORT, such as a second watchdog with workers,
    would share the port, so a plain socket first checks that no socket listens on it. With port
    0, the port that the kernel picks for the first socket is used for the others.
    """
    probe = listen(port)
    port = probe.getsockname()[1]
    probe.close()
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listeners.append(listen(port, reuse_port=True))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _stop_started(
    workers: dict[int, int],
    listeners: list[socket.socket],
    metrics_listener: MetricsListener,
    directory: str,
) -> int:
    """Stop the workers started so far, after a failed fork; return the exit status 1."""
    for listener in listeners:
        listener.close()
    metrics_listener.close()
    supervisor = _Supervisor(workers, directory)
    supervisor.stop_all()
    supervisor.wait()
    return 1


def _run_worker(
    number: int,
    supervisor: int,
    config: Config,
    listener: socket.socket,
    directory: str,
    limiter: SharedLimiter | None,
    base_environment: Mapping[bytes, bytes],
) -> NoReturn:
    """Serve in a forked worker and leave the process; never returns to the supervisor's code."""
    code = 1
    try:
        tag_worker(number)
        _set_parent_death_signal(PARENT_DEATH_SIGNAL)
        # A supervisor that died before the line above sent no signal, so the worker exits.
        if os.getppid() == supervisor:
            # Out of the supervisor's process group, so that Ctrl+C in a terminal reaches the
            # supervisor alone, which passes it on once.
            os.setpgid(0, 0)
            metrics = Metrics(shared_directory=directory)
            code = run_server(
                config, listener, metrics, limiter or Limiter(0), base_environment,
                PARENT_DEATH_SIGNAL,
            )  # fmt: skip
    except BaseException:
        logger.exception("Worker %d failed", number)
    finally:
        logging.shutdown()
        os._exit(code)


def _set_parent_death_signal(number: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


class _Supervisor:
    """Pass signals on to the workers and reap them, and any orphan, until all have exited."""

    def __init__(self, workers: dict[int, int], directory: str) -> None:
        self.workers = workers
        self.directory = directory
        self.exit_code = 0
        self.signalled = False

    def wait(self) -> int:
        previous = {number: signal.signal(number, self._on_signal) for number in _FORWARDED}
        try:
            while self.workers:
                try:
                    # PEP 475: a signal runs its handler and the wait goes on.
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                self._reaped(pid, os.waitstatus_to_exitcode(status))
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        stopped = asyncio.run(Reaper().stop_orphans(ORPHAN_GRACE))
        if stopped:
            logger.info("Stopped %d orphaned processes", stopped)
        return self.exit_code

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        logger.info("Received %s: passing it on to %d workers", name, len(self.workers))
        self.signalled = True
        self._send_all(number)

    def stop_all(self) -> None:
        """Send SIGTERM to every worker, as a signal to the supervisor would."""
        self.signalled = True
        self._send_all(signal.SIGTERM)

    def _send_all(self, number: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def _reaped(self, pid: int, code: int) -> None:
        number = self.workers.pop(pid, None)
        if number is None:
            logger.debug("Reaped orphan process %s (exit code %s)", pid, code)
            return
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]
        if not self.signalled:
            logger.error(
                "Worker %d (pid %d) %s before any signal: stopping the others",
                number, pid, _describe_exit(code),
            )  # fmt: skip
            self.exit_code = code if code > 0 else 1
            self.stop_all()
        elif code != 0:
            logger.warning("Worker %d (pid %d) %s", number, pid, _describe_exit(code))
            self.exit_code = self.exit_code or (code if code > 0 else 1)
        else:
            logger.info("Worker %d (pid %d) stopped", number, pid)


def _describe_exit(code: int) -> str:
    """Describe an exit code from os.waitstatus_to_exitcode: `was killed by SIGKILL`."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
