"""The runner: spawn a function process, stream its input and collect its output.

Each process starts in its own session (so in its own process group) with `os.posix_spawnp`,
which costs far less than a fork of the whole interpreter. Pipes are non-blocking and watched by
the event loop, so stdin is fed while stdout and stderr are drained and no size of input or output
can deadlock. The exit status comes from the `Reaper`.

Whatever way `run` ends (exit, exec_timeout, cancellation by the caller), the process group is
killed before it returns, so no request leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import signal
from collections.abc import AsyncIterable, Callable, Mapping

from .output import Output
from .reaper import Reaper, list_children

__all__ = ["Completed", "ProcessRunner", "SpawnError"]

# After the function process exits, a grandchild it left in the background may still hold
# stdout open. Its output is awaited this long, then the process group is killed.
EXIT_DRAIN_GRACE = 0.25
# Seconds to wait for a killed process to exit before its request returns anyway.
# NOTE: a process in uninterruptible sleep can outlive this wait, and then its slot is freed early.
KILL_WAIT = 1.0
_READ_SIZE = 256 * 1024
# errno values that mean the machine, not the function, is out of a resource.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
# Python ignores these; a child would inherit that through exec, so they are reset to default.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class SpawnError(Exception):
    """The function process could not be started; `error` is the OSError from the system."""

    def __init__(self, command: str, error: OSError) -> None:
        super().__init__(f"Failed to start process {command!r}: {error.strerror or error}")
        self.command = command
        self.error = error

    @property
    def resource_exhausted(self) -> bool:
        """True when the cause is a limit of the machine (descriptors, processes, memory)."""
        return self.error.errno in _EXHAUSTED


class OutputError(Exception):
    """The output could not be stored (the temp dir is full or unwritable)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"Failed to store the function output: {error.strerror or error}")
        self.error = error


@dataclasses.dataclass
class Completed:
    """The end of a function process; `exit_code` is negative for a signal, as in subprocess."""

    pid: int
    exit_code: int
    timed_out: bool = False

    def describe(self) -> str:
        """Describe a failed exit in Go's words: `exit status 3` or `signal: killed`."""
        if self.exit_code >= 0:
            return f"exit status {self.exit_code}"
        name = signal.strsignal(-self.exit_code) or f"signal {-self.exit_code}"
        return f"signal: {name.lower()}"


class _PipeReader:
    """Read a non-blocking pipe from event loop callbacks until end of file."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        sink: Callable[[bytes], None],
        on_error: Callable[[], None],
    ) -> None:
        self.fd = fd
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._sink = sink
        self._on_error = on_error
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._finish(error)
            return
        if not data:
            self._finish(None)
            return
        try:
            self._sink(data)
        except OSError as error:
            self._finish(OutputError(error))
            self._on_error()

    def _finish(self, error: BaseException | None) -> None:
        self.close()
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    def close(self) -> None:
        if self.done.done() and not self.done.cancelled():
            self.done.exception()  # marks an error as seen when the run ended another way
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


async def _wait_writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await future
    finally:
        loop.remove_writer(fd)


async def _feed(loop: asyncio.AbstractEventLoop, fd: int, chunks: AsyncIterable[bytes]) -> None:
    """Write every chunk to `fd`; stop quietly when the process closed its stdin."""
    try:
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    await _wait_writable(loop, fd)
                    continue
                view = view[written:]
    except BrokenPipeError:
        # The process exited or closed stdin without reading everything: that is its choice.
        return


def _discard(data: bytes) -> None:
    pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    found = []
    pending = [pid]
    while pending:
        children = list_children(pending.pop())
        found.extend(children)
        pending.extend(children)
    return found


def kill_tree(pid: int) -> None:
    """Kill the process group of `pid` and every descendant, even those that left the group."""
    descendants = _descendants(pid)
    _kill_group(pid)
    for child in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)


class ProcessRunner:
    """Run one command per call, each in a new session, and collect its result."""

    def __init__(
        self,
        argv: tuple[str, ...],
        reaper: Reaper,
        *,
        combine_output: bool = True,
        exec_timeout: float = 0.0,
    ) -> None:
        self.argv = argv
        self.reaper = reaper
        self.combine_output = combine_output
        self.exec_timeout = exec_timeout
        # The PATH search is done once: posix_spawnp would repeat it in the child for every
        # request, trying each PATH entry with execve, while the event loop waits for the exec.
        # A command that is not found now is searched for at each request, as before.
        self.executable = shutil.which(argv[0]) if argv else None
        self._spawn = os.posix_spawn if self.executable else os.posix_spawnp

    async def run(
        self,
        environment: Mapping[bytes, bytes],
        stdin: AsyncIterable[bytes] | None,
        output: Output,
        stderr: Callable[[bytes], None] | None = None,
    ) -> Completed:
        """Run the command once with `stdin` as its input and its output written to `output`.

        stdin None gives the process /dev/null. With combine_output false, stderr bytes go to the
        `stderr` callable. Raises SpawnError when the process cannot start and OutputError when its
        output cannot be stored; a timed-out run returns with `timed_out` set.
        """
        loop = asyncio.get_running_loop()
        child_fds: list[int] = []
        parent_fds: list[int] = []
        try:
            actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
            stdin_fd = -1
            if stdin is None:
                actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
            else:
                read_end, stdin_fd = os.pipe2(os.O_CLOEXEC)
                child_fds.append(read_end)
                parent_fds.append(stdin_fd)
                actions.append((os.POSIX_SPAWN_DUP2, read_end, 0))
            stdout_fd, write_end = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(stdout_fd)
            child_fds.append(write_end)
            actions.append((os.POSIX_SPAWN_DUP2, write_end, 1))
            stderr_fd = -1
            if self.combine_output:
                actions.append((os.POSIX_SPAWN_DUP2, write_end, 2))
            else:
                stderr_fd, error_end = os.pipe2(os.O_CLOEXEC)
                parent_fds.append(stderr_fd)
                child_fds.append(error_end)
                actions.append((os.POSIX_SPAWN_DUP2, error_end, 2))
        except OSError as error:
            _close_all(child_fds + parent_fds)
            raise SpawnError(self.argv[0], error) from error

        # posix_spawn returns once the child has called exec and holds the GIL until then
        # (CPython 3.11), so calling it from a thread pool was measured to gain nothing.
        try:
            pid = self._spawn(
                self.executable or self.argv[0],
                self.argv,
                environment,
                file_actions=actions,
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as error:
            _close_all(child_fds + parent_fds)
            raise SpawnError(self.argv[0], error) from error
        except BaseException:
            # Such as ValueError for a NUL in the environment: the pipes must not leak either.
            _close_all(child_fds + parent_fds)
            raise
        exited = self.reaper.watch(pid)
        _close_all(child_fds)
        for fd in parent_fds:
            # Pipe ends carry no other status flag, so one F_SETFL replaces os.set_blocking's two
            # calls.
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)

        # An output that cannot be stored stops the process at once instead of at a timeout.
        readers = [_PipeReader(loop, stdout_fd, output.write, lambda: _kill_group(pid))]
        if stderr_fd >= 0:
            readers.append(_PipeReader(loop, stderr_fd, stderr or _discard, lambda: None))
        timed_out = False
        status: int | None = None
        try:
            async with asyncio.timeout(self.exec_timeout or None):
                if stdin is not None:
                    try:
                        await _feed(loop, stdin_fd, stdin)
                    finally:
                        os.close(stdin_fd)
                        stdin_fd = -1
                status = await exited
                await _drain(readers)
        except TimeoutError:
            timed_out = True
        finally:
            if status is None:
                kill_tree(pid)
                await _reap_killed(self.reaper, pid)
            else:
                _kill_group(pid)
            for reader in readers:
                reader.close()
            if stdin_fd >= 0:
                os.close(stdin_fd)
        if timed_out or status is None:
            return Completed(pid, -signal.SIGKILL, timed_out=True)
        return Completed(pid, os.waitstatus_to_exitcode(status))


async def _reap_killed(reaper: Reaper, pid: int) -> None:
    """Wait up to KILL_WAIT for `pid`, just sent SIGKILL, to be reaped; then stop watching it.

    A killed process takes a moment to exit. Returning at once would free its max_inflight slot
    while it still runs, and the next request could start a process beside it.
    """
    try:
        if not _reap_if_exited(pid):
            # A fresh future: cancelling the run also cancelled the one that `run` awaited.
            await asyncio.wait([reaper.watch(pid)], timeout=KILL_WAIT)
    finally:
        reaper.forget(pid)


def _reap_if_exited(pid: int) -> bool:
    """Reap `pid` if it has exited, without blocking; return True when it is gone."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # the SIGCHLD handler reaped it already
    return reaped != 0


async def _drain(readers: list[_PipeReader]) -> None:
    """Wait for end of file on every pipe, for at most EXIT_DRAIN_GRACE after the exit."""
    futures = [reader.done for reader in readers]
    if not all(future.done() for future in futures):
        # Usually end of file came before the exit status; otherwise give the pipes a moment.
        await asyncio.wait(futures, timeout=EXIT_DRAIN_GRACE)
    for future in futures:
        if future.done():
            future.result()  # re-raises OutputError


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
