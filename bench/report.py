"""Write the results JSON and render it as a text table."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.settings import MACHINE_SCENARIOS, SCENARIOS

SCHEMA_VERSION = 1


def write_atomically(path: Path, text: str) -> None:
    """Write text to a .tmp file beside ``path`` and rename it, so no partial file is left."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_json(path: Path, document: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def _format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _format_spread(spread: dict[str, float] | None, with_range: bool) -> str:
    if spread is None:
        return "-"
    text = _format_number(spread["median"])
    if with_range and spread["min"] != spread["max"]:
        text += f" [{_format_number(spread['min'])}, {_format_number(spread['max'])}]"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay out rows in left-aligned columns separated by two spaces."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    lines.insert(1, "  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def _describe_run(document: dict[str, Any]) -> list[str]:
    machine = document["machine"]
    settings = document["settings"]
    steal = f"CPU steal during the run: {document['cpu_steal_percent']:.2f} %"
    load = document.get("load_average_1min")  # absent from files of older versions
    if load is not None:
        steal += f"; 1-minute load average {load['before']:.2f} before, {load['after']:.2f} after"
    lines = [
        f"Results of {document['started_at']}, {'quick' if settings['quick'] else 'full'} run, "
        f"{document['repeat']} repetition(s), {document['duration_s']:.0f} s",
        f"Machine: {machine['cores']} cores ({machine['cpu_model']}), "
        f"kernel {machine['kernel']}, Python {machine['python']}",
        steal,
        f"Load tool: {document['load_tools']['throughput']} for throughput; built-in "
        f"({document['load_tools']['builtin_event_loop']} event loop) for overload",
    ]
    for key, server in document["servers"].items():
        lines.append(f"Server {key}: {' '.join(server['command'])}")
    added = settings.get("server_settings")  # absent from files of older versions
    if added:
        lines.append("Settings added to every scenario: " + " ".join(f"{n}={v}" for n, v in added))
    return lines


def render_table(document: dict[str, Any]) -> str:
    """Return the run's figures as text: medians per server and, with two servers, A/B."""
    summary = document["summary"]
    comparison = document.get("comparison") or {}
    keys = list(document["servers"])
    with_range = document["repeat"] > 1
    lines = _describe_run(document)

    machine_rows = []
    for scenario in MACHINE_SCENARIOS:
        for name, spread in summary.get(scenario, {}).get("machine", {}).items():
            machine_rows.append([scenario, name, _format_spread(spread, with_range)])
    if machine_rows:
        lines += ["", *_table(["ceiling", "figure", "value"], machine_rows)]

    header = ["scenario", "figure", *keys]
    if comparison:
        header.append(f"{keys[0]}/{keys[1]} median [min, max]")
    rows = []
    for scenario in SCENARIOS:
        if scenario in MACHINE_SCENARIOS or scenario not in summary:
            continue
        names: list[str] = []
        for key in keys:
            names += [n for n in summary[scenario].get(key, {}) if n not in names]
        for name in names:
            row = [scenario, name]
            for key in keys:
                row.append(_format_spread(summary[scenario].get(key, {}).get(name), with_range))
            if comparison:
                row.append(_format_spread(comparison.get(scenario, {}).get(name), True))
            rows.append(row)
    if rows:
        lines += ["", *_table(header, rows)]

    check_rows = []
    for scenario, by_key in document["checks"].items():
        for key, by_check in by_key.items():
            for name, passed in by_check.items():
                check_rows.append([scenario, key, name, "passed" if passed else "FAILED"])
    if check_rows:
        lines += ["", *_table(["scenario", "server", "check", "result"], check_rows)]

    for error in document["errors"]:
        lines.append(
            f"ERROR in {error['scenario']} ({error['server']}, repetition "
            f"{error['repetition']}): {error['error']}"
        )
    return "\n".join(lines) + "\n"
