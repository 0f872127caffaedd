"""Describe the machine a run happens on, and measure CPU steal from /proc/stat."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def _memory_total_bytes() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def machine_info() -> dict[str, Any]:
    """Return the cores, CPU model, memory, kernel and Python that the results depend on."""
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_total_bytes": _memory_total_bytes(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def wrk_version() -> str | None:
    """Return the first line of ``wrk -v``, or None if wrk is not on PATH."""
    path = shutil.which("wrk")
    if path is None:
        return None
    # wrk prints its version with the usage text and exits with status 1.
    completed = subprocess.run(
        [path, "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate line of /proc/stat, in clock ticks."""

    total: int
    steal: int


def read_cpu_times() -> CpuTimes:
    """Read the total and steal ticks of all CPUs from the first line of /proc/stat."""
    with open("/proc/stat") as stat_file:
        fields = stat_file.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice: guest time is
    # already counted in user and nice, so it is left out of the total.
    values = [int(value) for value in fields[1:9]]
    return CpuTimes(total=sum(values), steal=values[7])


class StealMeter:
    """CPU steal over an interval, as a percentage of all CPU time of the machine."""

    def __init__(self) -> None:
        self._start = read_cpu_times()

    def percent(self) -> float:
        """Return the steal percentage since the meter was created."""
        end = read_cpu_times()
        total = end.total - self._start.total
        if total <= 0:
            return 0.0
        return 100.0 * (end.steal - self._start.steal) / total
