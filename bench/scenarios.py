"""The scenarios that run against a watchdog: throughput, overload, large-body and timeout.

Each scenario starts a fresh server with the environment it needs, measures, stops the
server and returns a dict with ``figures`` (numbers, compared between servers), ``checks``
(booleans) and ``details`` (everything else, including the raw load-tool output).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import client, load, procfs
from bench.machine import StealMeter
from bench.servers import RunningServer, ServerError, ServerSpec
from bench.settings import MIB, Settings, size_label

FUNCTIONS_DIR = Path(__file__).resolve().parent / "functions"
Note = Callable[[str], None]


def _environment(fprocess: str, **extra: str) -> dict[str, str]:
    """Return the watchdog settings shared by all scenarios, plus ``extra``."""
    environment = {
        "fprocess": fprocess,
        "read_timeout": "30",
        "write_timeout": "30",
        # Time between SIGTERM and closing the listener; the default (write_timeout) would
        # add 30 s to every server stop.
        "healthcheck_interval": "100ms",
    }
    environment.update(extra)
    return environment


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerError(f"{name} is not on PATH")
    return path


def _server(settings: Settings, spec: ServerSpec, environment: dict[str, str]) -> RunningServer:
    environment = {**environment, **dict(settings.server_settings)}
    comm = Path(environment["fprocess"].split()[0]).name[:15]
    return RunningServer(
        spec=spec,
        settings=environment,
        function_comm=comm,
        ready_timeout_s=settings.ready_timeout_s,
        stop_timeout_s=settings.stop_timeout_s,
    )


def _warm_up(server: RunningServer, body: bytes) -> dict[str, Any]:
    """Send one request and raise ServerError unless the function echoes it with 200."""
    result = client.post_once(server.port, body, timeout_s=30.0)
    if result["status"] != 200 or result.get("body_bytes") != len(body):
        raise ServerError(
            f"the first request got status {result['status']} with "
            f"{result.get('body_bytes')} of {len(body)} bytes echoed: {result}. "
            f"Server log:\n{server.log_tail()}"
        )
    return result


def _count_errors(result: dict[str, Any]) -> int:
    """Return the socket errors plus the responses whose status is not 200."""
    not_ok = sum(int(count) for status, count in result["status_counts"].items() if status != "200")
    return int(result["socket_errors"]) + not_ok


def run_throughput(settings: Settings, spec: ServerSpec, note: Note) -> dict[str, Any]:
    """Measure requests/s, latency and server CPU per request with ``cat`` as the function."""
    figures: dict[str, float | None] = {}
    measurements = []
    server = _server(settings, spec, _environment(_program("cat")))
    with server:
        warm_up = _warm_up(server, b"x" * settings.body_size)
        for connections in settings.connections:
            note(f"{connections} connection(s)")
            steal = StealMeter()
            cpu_before = procfs.cpu_ticks_by_pid(server.pid, server.function_comm)
            result = load.measure(
                settings.load_tool,
                server.port,
                connections,
                settings.duration_s,
                settings.body_size,
            )
            cpu_after = procfs.cpu_ticks_by_pid(server.pid, server.function_comm)
            cpu_s = procfs.cpu_seconds_between(cpu_before, cpu_after)
            result["server_cpu_s"] = round(cpu_s, 3)
            result["cpu_steal_percent"] = round(steal.percent(), 2)
            measurements.append(result)

            prefix = f"c{connections}"
            requests = result["requests"]
            figures[f"{prefix}.requests_per_s"] = result["requests_per_s"]
            figures[f"{prefix}.p50_ms"] = result["latency_ms"]["p50"]
            figures[f"{prefix}.p99_ms"] = result["latency_ms"]["p99"]
            figures[f"{prefix}.errors"] = _count_errors(result)
            figures[f"{prefix}.server_cpu_us_per_request"] = (
                round(cpu_s / requests * 1e6, 1) if requests else None
            )
    return {
        "load_tool": settings.load_tool,
        "figures": figures,
        "checks": {},
        "details": {"server": server.info, "warm_up": warm_up, "measurements": measurements},
    }


def _read_max_concurrency(counter: Path) -> int:
    text = counter.read_text()
    return int(json.loads(text)["max"]) if text.strip() else 0


def _measure_counted(
    settings: Settings,
    spec: ServerSpec,
    function_dir: Path,
    name: str,
    connections: int,
    max_inflight: int | None,
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Run the counting function under load; return the load result, max concurrency, server."""
    script = function_dir / "count_inflight.py"
    counter = function_dir / f"{name}.json"
    counter.write_text("")
    # -I -S: the function needs only the standard library, so it skips site for a faster start.
    fprocess = f"{sys.executable} -I -S {script} {counter}"
    extra = {} if max_inflight is None else {"max_inflight": str(max_inflight)}
    server = _server(settings, spec, _environment(fprocess, **extra))
    with server:
        _warm_up(server, b"x" * settings.body_size)
        result = load.measure(
            "builtin", server.port, connections, settings.duration_s, settings.body_size
        )
    return result, _read_max_concurrency(counter), server.info


def _status_figures(result: dict[str, Any], status: str) -> tuple[float, float | None]:
    """Return the rate per second and the p99 latency of one status code."""
    count = result["status_counts"].get(status, 0)
    rate = round(count / result["elapsed_s"], 1) if result["elapsed_s"] > 0 else 0.0
    latency = result["latency_ms_by_status"].get(status)
    return rate, latency["p99"] if latency else None


def run_overload(settings: Settings, spec: ServerSpec, note: Note) -> dict[str, Any]:
    """Measure goodput and rejections at max_inflight, and the function's max concurrency."""
    with tempfile.TemporaryDirectory(prefix="bench-function-") as directory:
        function_dir = Path(directory)
        shutil.copyfile(FUNCTIONS_DIR / "count_inflight.py", function_dir / "count_inflight.py")

        note(f"max_inflight={settings.max_inflight}, {settings.overload_connections} connection(s)")
        limited, limited_max, limited_server = _measure_counted(
            settings,
            spec,
            function_dir,
            "limited",
            settings.overload_connections,
            settings.max_inflight,
        )
        note(f"no limit, {settings.unlimited_connections} connection(s)")
        unlimited, unlimited_max, unlimited_server = _measure_counted(
            settings, spec, function_dir, "unlimited", settings.unlimited_connections, None
        )

    goodput, p99_ok = _status_figures(limited, "200")
    rejected, p99_rejected = _status_figures(limited, "429")
    other = _count_errors(limited) - limited["status_counts"].get("429", 0)
    unlimited_rate, _ = _status_figures(unlimited, "200")
    prefix = f"unlimited_c{settings.unlimited_connections}"
    figures: dict[str, float | None] = {
        "goodput_per_s": goodput,
        "rejected_429_per_s": rejected,
        "p99_200_ms": p99_ok,
        "p99_429_ms": p99_rejected,
        "other_errors": other,
        "max_concurrent_functions": limited_max,
        f"{prefix}.requests_per_s": unlimited_rate,
        f"{prefix}.max_concurrent_functions": unlimited_max,
        f"goodput_per_{prefix}": round(goodput / unlimited_rate, 3) if unlimited_rate else None,
    }
    return {
        "load_tool": "builtin",
        "figures": figures,
        "checks": {"max_inflight_held": limited_max <= settings.max_inflight},
        "details": {
            "note": "The built-in load generator runs this scenario whatever --loadgen is set to, "
            "because wrk reports one latency distribution for all status codes.",
            "limited": {"server": limited_server, "load": limited},
            "unlimited": {"server": unlimited_server, "load": unlimited},
        },
    }


def run_large_body(settings: Settings, spec: ServerSpec, note: Note) -> dict[str, Any]:
    """Stream large bodies through ``cat``: wall time, server peak RSS and an echo check."""
    figures: dict[str, float | None] = {}
    checks: dict[str, bool] = {}
    transfers = []
    # A slow transfer of a large body can outlast the 30 s that read_timeout and write_timeout
    # default to (here and in the classic OpenFaaS watchdog), so both are raised to 10 minutes.
    environment = _environment(_program("cat"), read_timeout="600", write_timeout="600")
    for size in settings.large_body_sizes:
        label = size_label(size)
        note(label)
        server = _server(settings, spec, environment)
        with server:
            rss_before = procfs.rss_bytes(server.pid, server.function_comm)
            transfer = client.post_streamed(server.port, size, timeout_s=120.0)
            peak = procfs.peak_rss_bytes(server.pid, server.function_comm)
        transfer.update(
            {
                "size": size,
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": peak,
                "server": server.info,
            }
        )
        transfers.append(transfer)
        figures[f"{label}.wall_s"] = transfer["wall_s"]
        figures[f"{label}.peak_rss_mib"] = round(peak / MIB, 1)
        figures[f"{label}.mib_per_s"] = (
            round(size / MIB / transfer["wall_s"], 1) if transfer["wall_s"] > 0 else None
        )
        checks[f"{label}.sha256_match"] = bool(transfer["sha256_match"])
    return {
        "load_tool": "bench.client (one streamed request)",
        "figures": figures,
        "checks": checks,
        "details": {"transfers": transfers},
    }


def run_timeout(settings: Settings, spec: ServerSpec, note: Note) -> dict[str, Any]:
    """Time requests to a function whose grandchild keeps stdout open past exec_timeout."""
    # A request is abandoned this long after exec_timeout, so that a watchdog that waits
    # for the end of stdout cannot stall the run for the grandchild's 30 s.
    client_timeout_s = settings.exec_timeout_s + 4.0
    with tempfile.TemporaryDirectory(prefix="bench-function-") as directory:
        script = Path(directory) / "hold_stdout.sh"
        shutil.copyfile(FUNCTIONS_DIR / "hold_stdout.sh", script)
        fprocess = f"{_program('sh')} {script}"
        environment = _environment(fprocess, exec_timeout=str(settings.exec_timeout_s))
        server = _server(settings, spec, environment)
        requests = []
        with server:
            for index in range(settings.timeout_requests):
                note(f"request {index + 1} of {settings.timeout_requests}")
                requests.append(client.post_once(server.port, b"x", client_timeout_s))

    latencies = [request["latency_s"] for request in requests if request["status"] is not None]
    limit_s = settings.exec_timeout_s + 1.0
    figures: dict[str, float | None] = {
        "latency_min_s": min(latencies) if latencies else None,
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "requests_without_response": len(requests) - len(latencies),
    }
    return {
        "load_tool": "bench.client (sequential requests)",
        "figures": figures,
        "checks": {
            "all_responses_within_exec_timeout_plus_1s": len(latencies) == len(requests)
            and all(latency <= limit_s for latency in latencies)
        },
        "details": {
            "client_timeout_s": client_timeout_s,
            "requests": requests,
            "server": server.info,
        },
    }


SERVER_SCENARIOS: dict[str, Callable[[Settings, ServerSpec, Note], dict[str, Any]]] = {
    "throughput": run_throughput,
    "overload": run_overload,
    "large-body": run_large_body,
    "timeout": run_timeout,
}
