"""Drive HTTP load with wrk or the built-in generator, and return results in one shape.

Both tools return a dict with these keys, among others:

- ``tool``, ``connections``, ``elapsed_s``, ``requests`` and ``requests_per_s``;
- ``status_counts``, keyed by status code as a string;
- ``latency_ms``: p50, p90, p99 and max over all responses;
- ``latency_ms_by_status``: the same per status code, or None for wrk;
- ``socket_errors``: connect, read, write and timeout errors;
- ``loadgen_cpu_percent``: the tool's CPU time divided by the wall time.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

from bench import servers

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
_RESULT_PREFIX = "BENCH_WRK_RESULT "
# Time allowed beyond the run's duration for a load tool to start, finish and print.
_TOOL_GRACE_S = 60.0


def resolve_tool(requested: str) -> str:
    """Return "wrk" or "builtin" for a --loadgen choice of auto, wrk or builtin."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if requested == "wrk" and shutil.which("wrk") is None:
        raise servers.ServerError("--loadgen wrk was given, but wrk is not on PATH")
    return requested


def measure(
    tool: str, port: int, connections: int, duration_s: int, body_size: int
) -> dict[str, Any]:
    """Send POST requests with ``body_size``-byte bodies over ``connections`` connections."""
    if tool == "wrk":
        result = _run_wrk(port, connections, duration_s, body_size)
    else:
        result = servers.run_helper(
            "loadgen",
            [
                f"--port={port}",
                f"--connections={connections}",
                f"--duration={duration_s}",
                f"--body-size={body_size}",
            ],
            timeout_s=duration_s + _TOOL_GRACE_S,
        )
    elapsed = result["elapsed_s"]
    result["requests_per_s"] = round(result["requests"] / elapsed, 1) if elapsed > 0 else 0.0
    return result


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_wrk(port: int, connections: int, duration_s: int, body_size: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise servers.ServerError("wrk is not on PATH")
    threads = max(1, min(connections, os.cpu_count() or 1))
    env = dict(os.environ)
    env["BENCH_BODY_SIZE"] = str(body_size)
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_s}s",
        "--timeout=10s",
        f"--script={WRK_SCRIPT}",
        f"http://{servers.LOOPBACK}:{port}/",
    ]
    # RUSAGE_CHILDREN counts children once they are reaped. wrk is the only child reaped in
    # between, so the difference is its CPU time.
    cpu_before = _children_cpu_s()
    returncode, stdout, stderr = servers.run_command(
        command, env, timeout_s=duration_s + _TOOL_GRACE_S
    )
    cpu_s = _children_cpu_s() - cpu_before

    text = stdout.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(_RESULT_PREFIX)]
    if returncode != 0 or not lines:
        message = (text + stderr.decode(errors="replace")).strip()[-2000:]
        raise servers.ServerError(f"wrk failed with exit code {returncode}: {message}")
    raw = json.loads(lines[-1][len(_RESULT_PREFIX) :])

    elapsed = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "tool": "wrk",
        "threads": threads,
        "connections": connections,
        "elapsed_s": round(elapsed, 3),
        "requests": raw["requests"],
        "status_counts": dict(sorted(raw["status_counts"].items())),
        "latency_ms": {name: value / 1000.0 for name, value in raw["latency_us"].items()},
        "latency_ms_by_status": None,
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "wrk_errors": errors,
        "loadgen_cpu_percent": round(100.0 * cpu_s / elapsed, 1) if elapsed > 0 else None,
        "body_size": body_size,
    }
