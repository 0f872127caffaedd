"""What the system shows of a watchdog, read from /proc without asking the watchdog itself.

A function process is a child of the watchdog that leads its own session (its session id equals
its pid), since the watchdog spawns each one with setsid. Background processes that a function
leaves behind on purpose also lead a session of their own once re-parented, so they are recognised
by their command line.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

__all__ = ["Child", "ProcessSampler", "children", "open_descriptors", "resident_bytes"]


@dataclasses.dataclass(frozen=True)
class Child:
    """A child process: its state letter of proc(5) (R, S, Z, ...), session and command line."""

    pid: int
    state: str
    session: int
    command: bytes

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")

    @property
    def session_leader(self) -> bool:
        return self.session == self.pid


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def children(parent: int) -> list[Child]:
    """Return the children of `parent`, from a scan of every /proc/<pid>/stat."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read(f"/proc/{entry.name}/stat")
        if stat is None:
            continue
        # The command name in brackets may contain spaces, so fields are counted after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) != parent:
            continue
        command = _read(f"/proc/{entry.name}/cmdline") or b""
        found.append(
            Child(int(entry.name), fields[0].decode(), int(fields[3]), command.rstrip(b"\0"))
        )
    return found


def open_descriptors(pid: int) -> list[str]:
    """Return the targets of the open file descriptors of `pid`."""
    targets = []
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(entry.path))
        except OSError:
            continue  # closed while listing
    return targets


def resident_bytes(pid: int) -> int:
    """Return the resident set size of `pid` (VmRSS of /proc/<pid>/status) in bytes."""
    status = _read(f"/proc/{pid}/status") or b""
    for line in status.splitlines():
        if line.startswith(b"VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessLookupError(pid)


@dataclasses.dataclass
class Sample:
    """One reading of the watchdog's footprint, `seconds` after the sampler started."""

    seconds: float
    rss_bytes: int
    descriptors: int
    functions: int
    orphans: int


class ProcessSampler:
    """Count the watchdog's function processes as often as it can, from a thread.

    `max_functions` is the highest number of live function processes seen at once; `orphans`
    collects the pids of the deliberate background processes (command line `orphan_command`).
    Every `footprint_every` seconds it also records RSS and descriptors in `samples`.
    """

    def __init__(self, pid: int, orphan_command: bytes, footprint_every: float = 1.0) -> None:
        self.pid = pid
        self.orphan_command = orphan_command
        self.footprint_every = footprint_every
        self.max_functions = 0
        self.max_zombies = 0
        self.scans = 0
        self.over_limit: list[tuple[float, list[Child]]] = []
        self.orphans: set[int] = set()
        self.samples: list[Sample] = []
        self.limit: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)
        self._started = time.monotonic()

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def functions(self, found: list[Child]) -> list[Child]:
        """Return the live function processes among the watchdog's children `found`."""
        return [
            child
            for child in found
            if child.session_leader and not child.zombie and not self._is_orphan(child)
        ]

    def _is_orphan(self, child: Child) -> bool:
        # An exiting process has no command line any more, so an orphan in its last moments is
        # recognised by its pid, seen before with the orphan's command line.
        if child.command == self.orphan_command:
            self.orphans.add(child.pid)
            return True
        if child.command:
            self.orphans.discard(child.pid)  # the pid now belongs to another process
            return False
        return child.pid in self.orphans

    def _run(self) -> None:
        next_footprint = 0.0
        while not self._stop.is_set():
            found = children(self.pid)
            functions = self.functions(found)
            self.scans += 1
            self.max_functions = max(self.max_functions, len(functions))
            self.max_zombies = max(self.max_zombies, sum(child.zombie for child in found))
            if self.limit is not None and len(functions) > self.limit:
                self.over_limit.append((time.monotonic() - self._started, functions))
            now = time.monotonic()
            if now >= next_footprint:
                next_footprint = now + self.footprint_every
                self._record(now, found, functions)
            # Pacing only: a scan costs a few milliseconds of CPU, which the server needs too.
            self._stop.wait(0.002)

    def _record(self, now: float, found: list[Child], functions: list[Child]) -> None:
        try:
            rss = resident_bytes(self.pid)
            descriptors = len(open_descriptors(self.pid))
        except (ProcessLookupError, FileNotFoundError):
            return
        orphans = sum(child.command == self.orphan_command for child in found)
        self.samples.append(
            Sample(round(now - self._started, 3), rss, descriptors, len(functions), orphans)
        )
