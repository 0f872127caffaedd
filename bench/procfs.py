"""Read process and CPU accounting from Linux /proc.

The harness measures the server under test from outside: CPU time and peak RSS are summed over
the server process and its descendants, minus the function processes it runs for requests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStat:
    """The fields of /proc/PID/stat that the harness uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime, in clock ticks


def read_stat(pid: int) -> ProcessStat | None:
    """Return the stat fields of a process, or None if it has exited."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm sits in parentheses and may itself contain spaces or parentheses.
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5), so utime (field 14) is fields[11].
    return ProcessStat(
        pid=pid,
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def list_processes() -> list[ProcessStat]:
    """Return the stat fields of every process on the machine."""
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats.append(stat)
    return stats


def server_processes(root_pid: int, function_comm: str | None) -> list[ProcessStat]:
    """Return the server process and its descendants, without the function processes.

    A descendant whose comm equals ``function_comm`` is left out together with its own
    descendants. Zombies are left out because they use no CPU and no memory.
    """
    children: dict[int, list[ProcessStat]] = {}
    root = None
    for stat in list_processes():
        children.setdefault(stat.ppid, []).append(stat)
        if stat.pid == root_pid:
            root = stat
    if root is None:
        return []

    found = [root]
    pending = [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child.state == "Z" or child.comm == function_comm:
                continue
            found.append(child)
            pending.append(child.pid)
    return found


def cpu_ticks_by_pid(root_pid: int, function_comm: str | None) -> dict[int, int]:
    """Return utime + stime in clock ticks for each process of the server."""
    return {stat.pid: stat.cpu_ticks for stat in server_processes(root_pid, function_comm)}


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Return the CPU seconds the server's processes used between two samples.

    A process that appears only in the later sample started in between, so all its time
    counts. NOTE: a process that exits between the samples takes its time with it, because
    its parent's cutime is not counted (it also contains the function processes).
    """
    ticks = sum(total - before.get(pid, 0) for pid, total in after.items())
    return max(ticks, 0) / CLOCK_TICKS_PER_S


def status_field_bytes(pid: int, field: str) -> int | None:
    """Return a kB field of /proc/PID/status (such as VmHWM) in bytes, or None if absent."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    prefix = field + ":"
    for line in lines:
        if line.startswith(prefix):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes(root_pid: int, function_comm: str | None) -> int:
    """Return the sum of VmHWM over the server process and its non-function descendants."""
    total = 0
    for stat in server_processes(root_pid, function_comm):
        total += status_field_bytes(stat.pid, "VmHWM") or 0
    return total


def rss_bytes(root_pid: int, function_comm: str | None) -> int:
    """Return the sum of the current VmRSS over the server and its non-function descendants."""
    total = 0
    for stat in server_processes(root_pid, function_comm):
        total += status_field_bytes(stat.pid, "VmRSS") or 0
    return total


def children_of(pid: int) -> list[int]:
    """Return the pids of the live or zombie children of a process."""
    return [stat.pid for stat in list_processes() if stat.ppid == pid]
