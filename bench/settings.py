"""The settings of a run: presets for full and quick runs, and their time estimates."""

from __future__ import annotations

import dataclasses
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB

# Scenarios in the order a repetition runs them. The first two measure the machine and the
# load generator, so they run once per repetition and not once per server.
SCENARIOS = (
    "spawn-ceiling",
    "loadgen-ceiling",
    "throughput",
    "overload",
    "large-body",
    "timeout",
)
MACHINE_SCENARIOS = ("spawn-ceiling", "loadgen-ceiling")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of a run. All durations are in seconds and all sizes in bytes."""

    quick: bool
    load_tool: str  # "wrk" or "builtin", for the throughput scenario
    duration_s: int  # of each load measurement against a watchdog
    ceiling_duration_s: int  # of each spawn-ceiling and loadgen-ceiling measurement
    connections: tuple[int, ...]  # of the throughput and loadgen-ceiling scenarios
    body_size: int = 1024
    overload_connections: int = 64
    max_inflight: int = 4
    unlimited_connections: int = 4
    large_body_sizes: tuple[int, ...] = (256 * MIB, GIB)
    timeout_requests: int = 5
    exec_timeout_s: int = 1
    ready_timeout_s: float = 30.0
    stop_timeout_s: float = 30.0
    # Watchdog settings added to every scenario's environment, such as workers=2; they win over
    # the scenario's own.
    server_settings: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset(quick: bool, load_tool: str) -> Settings:
    """Return the settings of a full run, or of a quick smoke run that ends within a minute."""
    if quick:
        return Settings(
            quick=True,
            load_tool=load_tool,
            duration_s=2,
            ceiling_duration_s=1,
            connections=(1, 16),
            large_body_sizes=(2 * MIB, 8 * MIB),
            timeout_requests=3,
        )
    return Settings(
        quick=False,
        load_tool=load_tool,
        duration_s=10,
        ceiling_duration_s=3,
        connections=(1, 16, 64),
    )


def size_label(size: int) -> str:
    """Return a size in bytes as a short label such as 8MiB or 1GiB."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def parse_size(text: str) -> int:
    """Parse a size such as 256MiB, 1GiB, 4096 or 64KiB into bytes."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024), ("B", 1)):
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


# Guesses, not measurements: startup and stop of a watchdog, and large-body transfer speed.
_SERVER_OVERHEAD_S = 2.0
_LARGE_BODY_BYTES_PER_S = 200 * MIB


def estimate_s(scenario: str, settings: Settings, load_tools: int) -> float:
    """Estimate the wall time of one scenario run, for the progress bar."""
    connections = len(settings.connections)
    if scenario == "spawn-ceiling":
        return settings.ceiling_duration_s + 0.5
    if scenario == "loadgen-ceiling":
        measurements = load_tools * connections + 1  # + the overload connection count
        return 1.0 + measurements * (settings.ceiling_duration_s + 0.3)
    if scenario == "throughput":
        return _SERVER_OVERHEAD_S + connections * (settings.duration_s + 0.5)
    if scenario == "overload":
        return 2 * (_SERVER_OVERHEAD_S + settings.duration_s + 0.5)
    if scenario == "large-body":
        transfer = sum(settings.large_body_sizes) / _LARGE_BODY_BYTES_PER_S
        return len(settings.large_body_sizes) * _SERVER_OVERHEAD_S + transfer
    if scenario == "timeout":
        return _SERVER_OVERHEAD_S + settings.timeout_requests * (settings.exec_timeout_s + 0.2)
    raise ValueError(f"unknown scenario {scenario!r}")
