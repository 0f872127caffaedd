"""The scenarios that measure the machine and the harness instead of a watchdog.

spawn-ceiling is the rate at which this machine can run the throughput function with no HTTP
at all. loadgen-ceiling is the rate of each load tool against a trivial in-harness endpoint,
which shows whether the tool could be what limits a watchdog's figures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench import load, servers, spawn_ceiling
from bench.settings import Settings

Note = Callable[[str], None]


def run_spawn_ceiling(settings: Settings, note: Note) -> dict[str, Any]:
    """Measure spawns/s of ``cat`` with 1 KiB of stdin, one worker process per core."""
    note("posix_spawn loop")
    result = spawn_ceiling.measure(settings.ceiling_duration_s, settings.body_size)
    return {
        "load_tool": "bench.spawn_ceiling",
        "figures": {"spawns_per_s": result["spawns_per_s"], "workers": result["workers"]},
        "checks": {},
        "details": result,
    }


def run_loadgen_ceiling(settings: Settings, note: Note) -> dict[str, Any]:
    """Measure each load tool's requests/s against bench.trivial_server."""
    tools = ["builtin"] if settings.load_tool == "builtin" else ["builtin", settings.load_tool]
    (port,) = servers.free_ports(1)
    command = [sys.executable, "-m", "bench.trivial_server", f"--port={port}"]
    proc = servers.start_process(command, env=servers.helper_env())
    figures: dict[str, float | None] = {}
    measurements = []
    try:
        servers.wait_until_http(proc, port, settings.ready_timeout_s)
        for tool in tools:
            counts = set(settings.connections)
            if tool == "builtin":
                counts.add(settings.overload_connections)  # the overload scenario's load
            for connections in sorted(counts):
                note(f"{tool}, {connections} connection(s)")
                result = load.measure(
                    tool, port, connections, settings.ceiling_duration_s, settings.body_size
                )
                measurements.append(result)
                prefix = f"{tool}.c{connections}"
                figures[f"{prefix}.requests_per_s"] = result["requests_per_s"]
                figures[f"{prefix}.loadgen_cpu_percent"] = result["loadgen_cpu_percent"]
    finally:
        servers.stop_process(proc, settings.stop_timeout_s)
    return {
        "load_tool": ", ".join(tools),
        "figures": figures,
        "checks": {},
        "details": {"endpoint": "bench.trivial_server", "measurements": measurements},
    }


MACHINE_SCENARIOS: dict[str, Callable[[Settings, Note], dict[str, Any]]] = {
    "spawn-ceiling": run_spawn_ceiling,
    "loadgen-ceiling": run_loadgen_ceiling,
}
