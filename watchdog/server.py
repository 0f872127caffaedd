"""The uvicorn server, its signals and the shutdown sequence.

On SIGTERM, health returns 503 and the lock file is removed at once. New requests are still
served for healthcheck_interval, so the orchestrator can remove the endpoint. Then the listener
closes and requests in flight get up to write_timeout to finish. Requests still running when
that time is up, or at a second signal, get 503 and their process groups are killed. SIGINT
runs the same sequence without the healthcheck_interval wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from .config import Config
from .lifecycle import Lifecycle
from .logs import RepeatedWarning
from .metrics import Metrics
from .reaper import Reaper

__all__ = ["ORPHAN_GRACE", "WatchdogServer"]

logger = logging.getLogger("watchdog")

# Seconds that orphaned processes get between SIGTERM and SIGKILL when the watchdog stops.
ORPHAN_GRACE = 2.0
# The message of asyncio's exception handler context when accept() fails for lack of resources.
_ACCEPT_FAILED = "socket.accept() out of system resource"


class WatchdogServer(uvicorn.Server):
    """A uvicorn server that runs the watchdog's shutdown sequence instead of uvicorn's."""

    def __init__(
        self,
        server_config: uvicorn.Config,
        config: Config,
        lifecycle: Lifecycle,
        reaper: Reaper,
        metrics: Metrics,
        parent_death_signal: int | None = None,
    ) -> None:
        """`parent_death_signal` is the signal that a worker gets when its supervisor dies."""
        super().__init__(server_config)
        self.parent_death_signal = parent_death_signal
        self.watchdog_config = config
        self.lifecycle = lifecycle
        self.reaper = reaper
        self.metrics = metrics
        self.exit_code = 0
        self._accept_failures = RepeatedWarning(logger)
        self._shutdown: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version raises the captured signal again after shutdown, which would end
        # the process by SIGTERM instead of with exit status 0.
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, self.begin_shutdown, number)
        if self.parent_death_signal is not None:
            loop.add_signal_handler(self.parent_death_signal, self._on_parent_death)
        try:
            yield
        finally:
            for number in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(number)
            if self.parent_death_signal is not None:
                loop.remove_signal_handler(self.parent_death_signal)

    def _on_parent_death(self) -> None:
        """Stop as after SIGINT when the supervisor died; later deliveries do nothing.

        Linux sends the parent-death signal again each time the worker passes to another thread
        of the dying supervisor, so it must not count as the second signal that forces the exit.
        """
        if self._shutdown is None and not self.should_exit:
            logger.warning("The supervisor exited: stopping this worker")
            self.begin_shutdown(signal.SIGINT)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.reaper.install(loop)
        loop.set_exception_handler(self._handle_loop_error)
        await super().startup(sockets)
        if self.should_exit:
            return
        try:
            self.lifecycle.start()
        except OSError as error:
            logger.error(
                "Failed to write the lock file %s (%s): make the temp dir writable or set "
                "suppress_lock=true",
                self.lifecycle.lock_path,
                error.strerror or error,
            )
            self.exit_code = 2
            self.should_exit = True
            return
        for listener in sockets or []:
            host, port = listener.getsockname()[:2]
            logger.info("Listening on http://%s:%s", host, port)

    def _handle_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Log failed accepts at most once a second; pass any other error to asyncio's handler.

        With no descriptor left, asyncio (CPython 3.11, selector_events.py) reports every failed
        accept() with a traceback, up to `backlog` times per readable event, and tries again a
        second later. The connections wait in the kernel's backlog meanwhile.
        """
        error = context.get("exception")
        if context.get("message") == _ACCEPT_FAILED and isinstance(error, OSError):
            self._accept_failures.warning(
                "Failed to accept connections (%s): they wait in the backlog, retried every second",
                error.strerror or error,
            )
            return
        loop.default_exception_handler(context)

    def begin_shutdown(self, number: int) -> None:
        """Start the shutdown sequence for signal `number`; a second signal forces the exit."""
        if self._shutdown is not None:
            logger.warning("Received %s again: stopping at once", signal.Signals(number).name)
            self._shutdown.cancel()
            self.lifecycle.stop_accepting()
            self.lifecycle.abort_all()
            self.should_exit = True
            return
        self._shutdown = asyncio.get_running_loop().create_task(self._shut_down(number))

    async def _shut_down(self, number: int) -> None:
        name = signal.Signals(number).name
        config = self.watchdog_config
        logger.info(
            "Received %s: health now returns 503, %d requests in flight",
            name,
            self.lifecycle.in_flight,
        )
        self.lifecycle.stop_accepting()
        interval = config.shutdown_interval if number == signal.SIGTERM else 0.0
        if interval:
            logger.info(
                "Serving new requests for healthcheck_interval (%gs) while the endpoint is removed",
                interval,
            )
            await asyncio.sleep(interval)
        logger.info(
            "Closing the listener: waiting up to %s for %d requests in flight",
            f"{config.write_timeout:g}s" if config.write_timeout else "no limit",
            self.lifecycle.in_flight,
        )
        self.should_exit = True
        stopped = await self.lifecycle.drain(config.write_timeout or None)
        if stopped:
            logger.warning(
                "Stopped %d requests still running after write_timeout with 503", stopped
            )
        else:
            logger.info("All requests in flight finished")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self._shutdown is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._shutdown
        signalled = await self.reaper.stop_orphans(ORPHAN_GRACE)
        if signalled:
            logger.info("Stopped %d orphaned processes", signalled)
        self.reaper.uninstall()
        self.metrics.close()
        logger.info("Watchdog stopped")
