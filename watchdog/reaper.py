"""Collect the exit status of every child, as PID 1 must.

One SIGCHLD handler reaps with `waitpid(-1, WNOHANG)`. The status of a function process that a
request is waiting on is handed to that request. Any other child, such as an orphan re-parented
to the watchdog, is reaped and dropped, so no zombie accumulates and no request loses its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time

__all__ = ["Reaper", "list_children", "set_child_subreaper"]

logger = logging.getLogger("watchdog")

_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux prctl); return success."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def list_children(parent: int) -> list[int]:
    """Return the pids whose parent is `parent`, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name in brackets may contain spaces, so fields are counted after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            children.append(int(entry))
    return children


class Reaper:
    """Reap children on SIGCHLD and deliver the statuses that requests wait for."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.orphans_reaped = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start handling SIGCHLD on `loop`; call from the main thread."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        # A child that exited before the handler was in place sends no further signal.
        self.reap()

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def watch(self, pid: int) -> asyncio.Future[int]:
        """Return a future for the wait status of `pid`; call right after spawning it.

        The SIGCHLD handler runs as a callback of the event loop, so a child cannot be reaped
        between its spawn and this call as long as no `await` separates them.
        """
        if self._loop is None:
            raise RuntimeError("Reaper.install() must run before Reaper.watch()")
        future = self._loop.create_future()
        self._waiting[pid] = future
        return future

    def forget(self, pid: int) -> None:
        """Stop waiting for `pid`; it is reaped as an orphan when it exits."""
        self._waiting.pop(pid, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            future = self._waiting.pop(pid, None)
            if future is None:
                self.orphans_reaped += 1
                logger.debug("Reaped orphan process %s (wait status %s)", pid, status)
            elif not future.done():
                future.set_result(status)

    async def stop_orphans(self, grace: float) -> int:
        """Send SIGTERM to every remaining child, then SIGKILL to those alive after `grace` seconds.

        Returns the number of children that were signalled.
        """
        children = list_children(os.getpid())
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        remaining = children
        while remaining and time.monotonic() < deadline:
            self.reap()
            remaining = [pid for pid in remaining if _is_running(pid)]
            if remaining:
                await asyncio.sleep(0.02)  # polling: SIGCHLD does not say which child exited
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap()
        return len(children)


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")
