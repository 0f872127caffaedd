"""Command line of the load-testing harness.

    python -m bench run [SCENARIO ...] [--quick] [--server CMD] [--against CMD] [--repeat N]
                        [--set NAME=VALUE ...]
    python -m bench report RESULTS.json

``run`` starts each watchdog as an external command, drives the scenarios, prints a table,
and writes a timestamped results JSON with an SVG chart beside it. ``report`` prints the table
of an earlier results file and renders its chart again.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import load, runner, servers
from bench.machine import StealMeter, machine_info, wrk_version
from bench.progress import Progress, ProgressLogHandler
from bench.report import SCHEMA_VERSION, render_table, write_atomically, write_json
from bench.settings import SCENARIOS, Settings, parse_size, preset
from bench.svg import render_svg

logger = logging.getLogger("bench")

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent / "results"


def default_server_command() -> list[str]:
    """Return the command of this project's watchdog: fwatchdog beside this Python, if any."""
    beside = Path(sys.executable).parent / "fwatchdog"
    if beside.exists():
        return [str(beside)]
    on_path = shutil.which("fwatchdog")
    if on_path is not None:
        return [on_path]
    return [sys.executable, "-m", "watchdog"]


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _size_list(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run scenarios against one or two watchdogs")
    run.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}",
    )
    run.add_argument(
        "--quick", action="store_true", help="short smoke run that ends within about a minute"
    )
    run.add_argument(
        "--server", metavar="CMD", help="command of watchdog A (default: this project's fwatchdog)"
    )
    run.add_argument(
        "--against",
        metavar="CMD",
        help="command of watchdog B, run interleaved with A to report A/B ratios",
    )
    run.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions of every scenario (default 1, or 3 with --against)",
    )
    run.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="load tool of the throughput scenario (default: wrk if on PATH)",
    )
    run.add_argument(
        "--duration",
        type=int,
        metavar="SECONDS",
        help="length of each load measurement (default 10, quick 2)",
    )
    run.add_argument(
        "--connections",
        type=_int_list,
        metavar="LIST",
        help="throughput connection counts, such as 1,16,64 (quick: 1,16)",
    )
    run.add_argument(
        "--body-sizes",
        type=_size_list,
        metavar="LIST",
        help="large-body sizes, such as 256MiB,1GiB (quick: 2MiB,8MiB)",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="directory of the results JSON and SVG (default: bench/results)",
    )
    run.add_argument(
        "--set",
        action="append",
        type=_setting,
        default=[],
        metavar="NAME=VALUE",
        help="a watchdog setting for every scenario and both servers, such as workers=2 "
        "(repeatable)",
    )
    run.add_argument("--no-progress", action="store_true", help="do not show the progress bar")

    report = commands.add_parser("report", help="print a results file and render its SVG again")
    report.add_argument("results", type=Path, help="results JSON written by 'run'")
    return parser


def _setting(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _settings_from_args(args: argparse.Namespace) -> Settings:
    settings = preset(args.quick, load.resolve_tool(args.loadgen))
    overrides: dict[str, Any] = {}
    if args.duration is not None:
        overrides["duration_s"] = args.duration
    if args.connections is not None:
        overrides["connections"] = args.connections
    if args.body_sizes is not None:
        overrides["large_body_sizes"] = args.body_sizes
    if args.set:
        overrides["server_settings"] = tuple(args.set)
    return dataclasses.replace(settings, **overrides)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    # Turns SIGTERM into an exception so that the servers started so far are stopped.
    raise SystemExit(128 + signum)


def _results_paths(output_dir: Path, started_at: datetime, quick: bool) -> tuple[Path, Path]:
    stem = started_at.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    candidate = stem
    number = 1
    while (output_dir / f"{candidate}.json").exists():
        number += 1
        candidate = f"{stem}-{number}"
    return output_dir / f"{candidate}.json", output_dir / f"{candidate}.svg"


def run(args: argparse.Namespace) -> int:
    """Run the selected scenarios, write the results files and print the table."""
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        logger.error("unknown scenario %s; choose from %s", unknown, ", ".join(SCENARIOS))
        return 2
    selected = args.scenarios or list(SCENARIOS)
    settings = _settings_from_args(args)
    command_a = shlex.split(args.server) if args.server else default_server_command()
    specs = [servers.ServerSpec("A", tuple(command_a))]
    if args.against:
        specs.append(servers.ServerSpec("B", tuple(shlex.split(args.against))))
    repeat = args.repeat or (3 if args.against else 1)

    if not servers.become_subreaper():
        logger.warning(
            "prctl(PR_SET_CHILD_SUBREAPER) failed: orphaned function processes "
            "cannot be found and killed when a server stops"
        )
    steps = runner.plan_steps(selected, specs, repeat, settings)
    progress = Progress([step.estimate_s for step in steps], enabled=not args.no_progress)
    handler = ProgressLogHandler(progress)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False

    started_at = datetime.now(UTC)
    started = time.monotonic()
    steal = StealMeter()
    load_average_before = os.getloadavg()
    try:
        records = runner.execute(steps, settings, repeat, progress)
    finally:
        progress.close()
        servers.stop_all(settings.stop_timeout_s)
    runner.add_ceiling_ratios(records, settings)

    document = {
        "schema_version": SCHEMA_VERSION,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": ["python", "-m", "bench", *sys.argv[1:]],
        "machine": machine_info(),
        "cpu_steal_percent": round(steal.percent(), 2),
        # 1-minute load averages before and after: other work on the machine shows up here.
        "load_average_1min": {"before": load_average_before[0], "after": os.getloadavg()[0]},
        "load_tools": {
            "throughput": settings.load_tool,
            "wrk_version": wrk_version(),
            "builtin_event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        },
        "settings": settings.to_json(),
        "repeat": repeat,
        "servers": {spec.key: {"command": list(spec.command)} for spec in specs},
        "scenarios": [name for name in SCENARIOS if name in selected],
        "results": records,
        "summary": runner.summarise(records),
        "checks": runner.summarise_checks(records),
        "comparison": runner.compare(records) if len(specs) > 1 else None,
        "errors": [
            {key: record[key] for key in ("scenario", "server", "repetition", "error")}
            for record in records
            if record["error"]
        ],
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    json_path, svg_path = _results_paths(args.output_dir, started_at, settings.quick)
    write_json(json_path, document)
    write_atomically(svg_path, render_svg(document))
    sys.stdout.write(render_table(document))
    sys.stdout.write(f"\nResults: {json_path}\nChart: {svg_path}\n")
    return 1 if document["errors"] else 0


def report(args: argparse.Namespace) -> int:
    """Print the table of a results file and write its SVG again beside it."""
    document = json.loads(args.results.read_text())
    svg_path = args.results.with_suffix(".svg")
    write_atomically(svg_path, render_svg(document))
    sys.stdout.write(render_table(document))
    sys.stdout.write(f"\nChart: {svg_path}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        if args.command == "run":
            return run(args)
        return report(args)
    except servers.ServerError as error:
        logger.error("%s", error)
        return 1
