"""Plan and execute the steps of a run, then summarise the figures and compare the servers."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import servers
from bench.ceilings import MACHINE_SCENARIOS
from bench.machine import StealMeter
from bench.progress import Progress
from bench.scenarios import SERVER_SCENARIOS
from bench.servers import ServerSpec
from bench.settings import SCENARIOS, Settings, estimate_s
from bench.stats import ratio, spread

logger = logging.getLogger("bench")

# Results key of the scenarios that measure the machine instead of a server.
MACHINE_KEY = "machine"


@dataclass(frozen=True)
class Step:
    """One scenario run: for one server, or for the machine, in one repetition."""

    scenario: str
    server: ServerSpec | None
    repetition: int  # counted from 1
    estimate_s: float

    @property
    def key(self) -> str:
        return self.server.key if self.server is not None else MACHINE_KEY

    def label(self, repeat: int) -> str:
        text = self.scenario if self.server is None else f"{self.scenario} ({self.key})"
        return f"{text}, repetition {self.repetition}/{repeat}" if repeat > 1 else text


def plan_steps(
    selected: Sequence[str], specs: Sequence[ServerSpec], repeat: int, settings: Settings
) -> list[Step]:
    """Order the steps A, B, A, B: within a repetition, each scenario runs on every server."""
    load_tools = 1 if settings.load_tool == "builtin" else 2
    steps = []
    for repetition in range(1, repeat + 1):
        for scenario in SCENARIOS:
            if scenario not in selected:
                continue
            estimate = estimate_s(scenario, settings, load_tools)
            if scenario in MACHINE_SCENARIOS:
                steps.append(Step(scenario, None, repetition, estimate))
            else:
                steps.extend(Step(scenario, spec, repetition, estimate) for spec in specs)
    return steps


def execute(
    steps: Sequence[Step], settings: Settings, repeat: int, progress: Progress
) -> list[dict[str, Any]]:
    """Run every step and return one result record per step.

    A step that raises is logged and recorded with its error, and the run goes on.
    """
    records = []
    for index, step in enumerate(steps):
        progress.begin(index, step.label(repeat))
        steal = StealMeter()
        started = time.monotonic()
        error = None
        try:
            if step.server is None:
                result = MACHINE_SCENARIOS[step.scenario](settings, progress.note)
            else:
                result = SERVER_SCENARIOS[step.scenario](settings, step.server, progress.note)
        except Exception as exc:  # one failed scenario must not stop the others
            logger.exception(
                "scenario %s failed for %s in repetition %d",
                step.scenario,
                step.key,
                step.repetition,
            )
            result = {"load_tool": None, "figures": {}, "checks": {}, "details": {}}
            error = f"{type(exc).__name__}: {exc}"
        orphans = servers.kill_orphans()
        if orphans:
            logger.warning(
                "killed %d leftover processes after %s: %s", len(orphans), step.scenario, orphans
            )
        records.append(
            {
                "scenario": step.scenario,
                "server": step.key,
                "repetition": step.repetition,
                "elapsed_s": round(time.monotonic() - started, 3),
                "cpu_steal_percent": round(steal.percent(), 2),
                "error": error,
                **result,
            }
        )
    return records


def add_ceiling_ratios(records: list[dict[str, Any]], settings: Settings) -> None:
    """Add throughput/spawn-ceiling and throughput/loadgen-ceiling figures to throughput records.

    Each throughput figure is divided by the ceiling measured in the same repetition.
    """
    spawn: dict[int, float | None] = {}
    loadgen: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["scenario"] == "spawn-ceiling":
            spawn[record["repetition"]] = record["figures"].get("spawns_per_s")
        elif record["scenario"] == "loadgen-ceiling":
            loadgen[record["repetition"]] = record["figures"]

    for record in records:
        if record["scenario"] != "throughput" or record["error"]:
            continue
        figures = record["figures"]
        repetition = record["repetition"]
        # Rebuilt so that each connection count's ratios follow its other figures.
        ordered: dict[str, Any] = {}
        for connections in settings.connections:
            prefix = f"c{connections}."
            ordered.update({k: v for k, v in figures.items() if k.startswith(prefix)})
            rate = figures.get(f"{prefix}requests_per_s")
            per_spawn = ratio(rate, spawn.get(repetition))
            ceiling_key = f"{record['load_tool']}.{prefix}requests_per_s"
            per_loadgen = ratio(rate, loadgen.get(repetition, {}).get(ceiling_key))
            ordered[f"{prefix}per_spawn_ceiling"] = (
                None if per_spawn is None else round(per_spawn, 4)
            )
            ordered[f"{prefix}per_loadgen_ceiling"] = (
                None if per_loadgen is None else round(per_loadgen, 4)
            )
        ordered.update({k: v for k, v in figures.items() if k not in ordered})
        record["figures"] = ordered


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Return the median, min and max of each figure over repetitions.

    The result is keyed by scenario, then server key ("A", "B" or "machine"), then figure.
    """
    values: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for record in records:
        by_figure = values.setdefault(record["scenario"], {}).setdefault(record["server"], {})
        for name, value in record["figures"].items():
            by_figure.setdefault(name, []).append(value)
    return {
        scenario: {
            key: {name: spread(series) for name, series in by_figure.items()}
            for key, by_figure in by_key.items()
        }
        for scenario, by_key in values.items()
    }


def summarise_checks(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, bool]]]:
    """Return, per scenario, server and check, whether the check held in every repetition."""
    checks: dict[str, dict[str, dict[str, bool]]] = {}
    for record in records:
        by_check = checks.setdefault(record["scenario"], {}).setdefault(record["server"], {})
        for name, passed in record["checks"].items():
            by_check[name] = by_check.get(name, True) and bool(passed)
    return checks


def compare(
    records: Sequence[dict[str, Any]], first: str = "A", second: str = "B"
) -> dict[str, dict[str, Any]]:
    """Return the ratio first/second of each figure as median, min and max over repetitions.

    Each ratio pairs the two servers' figures from the same repetition.
    """
    paired: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for record in records:
        if record["server"] in (first, second):
            key = (record["scenario"], record["repetition"])
            paired.setdefault(key, {})[record["server"]] = record["figures"]

    ratios: dict[str, dict[str, list[float | None]]] = {}
    for (scenario, _), by_server in paired.items():
        if first not in by_server or second not in by_server:
            continue
        by_figure = ratios.setdefault(scenario, {})
        for name, value in by_server[first].items():
            by_figure.setdefault(name, []).append(ratio(value, by_server[second].get(name)))
    return {
        scenario: {name: spread(series) for name, series in by_figure.items()}
        for scenario, by_figure in ratios.items()
    }
