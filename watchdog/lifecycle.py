"""The pod lifecycle: whether the watchdog accepts work, the lock file, and draining requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

__all__ = ["Lifecycle", "ShuttingDown", "lock_file_path"]

logger = logging.getLogger("watchdog")


class ShuttingDown(Exception):
    """The drain period ended while the request was still running."""


def lock_file_path() -> str:
    """Return `$TMPDIR/.lock`, the path that orchestrators delete to take a replica out."""
    return os.path.join(tempfile.gettempdir(), ".lock")


class Lifecycle:
    """The accepting flag, the lock file and the set of requests in flight."""

    def __init__(self, suppress_lock: bool, lock_path: str | None = None) -> None:
        self.suppress_lock = suppress_lock
        self.lock_path = lock_path or lock_file_path()
        self.accepting = False
        self._requests: set[asyncio.Future[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def healthy(self) -> bool:
        """True while accepting work and, unless suppress_lock, while the lock file exists."""
        if not self.accepting:
            return False
        return self.suppress_lock or os.path.exists(self.lock_path)

    def start(self) -> None:
        """Write the lock file (unless suppressed) and start accepting; raises OSError."""
        if not self.suppress_lock:
            with open(self.lock_path, "wb"):
                pass
            logger.info("Wrote lock file %s", self.lock_path)
        self.accepting = True

    def stop_accepting(self) -> None:
        """Mark the watchdog unhealthy and remove the lock file; later calls do nothing."""
        if not self.accepting:
            return
        self.accepting = False
        if not self.suppress_lock:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            except OSError as error:
                # A read-only temp dir must not stop the shutdown, and health returns 503 anyway.
                logger.warning(
                    "Failed to remove lock file %s (%s); health returns 503 all the same",
                    self.lock_path,
                    error.strerror or error,
                )
                return
            logger.info("Removed lock file %s", self.lock_path)

    @contextlib.contextmanager
    def track_request(self) -> Iterator[asyncio.Future[None]]:
        """Count a request as in flight; the future it yields is set when the drain period ends."""
        future = asyncio.get_running_loop().create_future()
        self._requests.add(future)
        self._idle.clear()
        try:
            yield future
        finally:
            self._requests.discard(future)
            if not self._requests:
                self._idle.set()

    async def drain(self, timeout: float | None) -> int:
        """Wait until no request is in flight, for at most `timeout` seconds (None: no limit).

        Requests still running then are stopped with 503; returns how many there were.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return 0
        except TimeoutError:
            return self.abort_all()

    def abort_all(self) -> int:
        """Tell every request in flight to stop with 503; return how many there were."""
        for future in self._requests:
            if not future.done():
                future.set_result(None)
        return len(self._requests)
