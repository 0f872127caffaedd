"""The long soak profile: `python -m tests.soak` (run by scripts/soak).

Starts one watchdog with the soak settings, runs the mixed workload for --requests requests or
--minutes minutes (whichever ends first), prints progress and the figures, and writes them as
JSON and Markdown under bench/results/. Exits 0 when every check passed and 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from tests.helpers import Watchdog
from tests.soak.driver import Profile, Report, SoakRun, server_settings
from tests.soak.workload import MiB, Outcome, Payloads

RESULTS = Path(__file__).resolve().parent.parent.parent / "bench" / "results"
PROGRESS_EVERY = 10.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/soak",
        description="Run the soak workload against one fwatchdog and check that nothing leaks.",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=int(os.environ.get("SOAK_REQUESTS", 100_000)),
        help="requests of the main phase (default 100000, or $SOAK_REQUESTS)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(os.environ.get("SOAK_MINUTES", 30)),
        help="stop the main phase after this many minutes (default 30, or $SOAK_MINUTES)",
    )
    parser.add_argument("--connections", type=int, default=64, help="client connections (64)")
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up requests (2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix (1)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        help="directory of the JSON and Markdown results (default: bench/results)",
    )
    return parser.parse_args(argv)


class Progress:
    """Print the count of finished requests and the server's footprint every PROGRESS_EVERY s."""

    def __init__(self, run: SoakRun, total: int) -> None:
        self.run = run
        self.total = total
        self.done = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_EVERY

    def __call__(self, outcome: Outcome) -> None:
        with self._lock:
            self.done += 1
            self.rejected += outcome.status == 429
            now = time.monotonic()
            if now < self._next:
                return
            self._next = now + PROGRESS_EVERY
            samples = self.run.sampler.samples
            footprint = ""
            if samples:
                latest = samples[-1]
                footprint = (
                    f", RSS {latest.rss_bytes / MiB:.1f} MiB, {latest.descriptors} descriptors,"
                    f" {latest.orphans} orphans"
                )
            print(
                f"{now - self._started:7.0f}s {self.done}/{self.total} requests "
                f"({self.rejected} got 429){footprint}",
                flush=True,
            )


def _rss_trend(samples: list[dict[str, float]]) -> dict[str, float]:
    """Return the median RSS of the first and of the last quarter of the samples, in MiB."""
    if len(samples) < 8:
        return {}
    quarter = len(samples) // 4
    first = statistics.median(sample["rss_bytes"] for sample in samples[:quarter])
    last = statistics.median(sample["rss_bytes"] for sample in samples[-quarter:])
    return {
        "median of the first quarter": round(first / MiB, 2),
        "median of the last quarter": round(last / MiB, 2),
        "max": round(max(sample["rss_bytes"] for sample in samples) / MiB, 2),
    }


def _document(
    report: Report, command: str, orphans_left: list[str], exit_code: int
) -> dict[str, Any]:
    findings = dict(report.findings)
    findings["orphans left after stop"] = orphans_left
    findings["exit status"] = [] if exit_code == 0 else [f"fwatchdog exited with {exit_code}"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "profile": dataclasses.asdict(report.profile),
        "requests": report.requests,
        "seconds": round(report.seconds, 1),
        "requests_per_second": round(report.requests / report.seconds, 1) if report.seconds else 0,
        "outcomes": report.statuses,
        "function_runs": sum(
            count
            for counts in report.statuses.values()
            for status, count in counts.items()
            if status.isdigit() and status != "429"
        ),
        "latency_seconds": report.latency,
        "max_function_processes": report.max_functions,
        "max_zombies_seen": report.max_zombies,
        "process_scans": report.scans,
        "orphans_seen": report.orphans_seen,
        "baseline": dataclasses.asdict(report.baseline) if report.baseline else None,
        "final": dataclasses.asdict(report.final) if report.final else None,
        "rss_trend": _rss_trend(report.samples),
        "metrics": report.metrics,
        "findings": findings,
        "samples": report.samples,
    }


def _summary_table(document: dict[str, Any]) -> list[str]:
    baseline = document["baseline"] or {}
    final = document["final"] or {}
    lines = [
        "| figure | value |",
        "| --- | --- |",
        f"| requests (main phase) | {document['requests']} |",
        f"| seconds | {document['seconds']} |",
        f"| requests/s | {document['requests_per_second']} |",
        f"| function runs answered (not 429, warm-up included) | {document['function_runs']} |",
        f"| max function processes (max_inflight 8) | {document['max_function_processes']} |",
        f"| /proc scans | {document['process_scans']} |",
        f"| orphans seen | {document['orphans_seen']} |",
        f"| RSS after warm-up / after the run (MiB) | {baseline.get('rss_bytes', 0) / MiB:.1f}"
        f" / {final.get('rss_bytes', 0) / MiB:.1f} |",
        f"| descriptors after warm-up / after the run | {baseline.get('descriptors')}"
        f" / {final.get('descriptors')} |",
    ]
    for name, value in document["rss_trend"].items():
        lines.append(f"| RSS over the run, {name} (MiB) | {value} |")
    return lines


def _outcome_table(document: dict[str, Any]) -> list[str]:
    lines = ["| function action | outcomes |", "| --- | --- |"]
    for name, counts in document["outcomes"].items():
        shown = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
        lines.append(f"| {name} | {shown} |")
    return lines


def _latency_table(document: dict[str, Any]) -> list[str]:
    lines = ["| function | count | p50 | p99 | max |", "| --- | --- | --- | --- | --- |"]
    for kind, figures in document["latency_seconds"].items():
        lines.append(
            f"| {kind} | {figures['count']} | {figures['p50']} | {figures['p99']} |"
            f" {figures['max']} |"
        )
    return lines


def _footprint_table(document: dict[str, Any]) -> list[str]:
    """Return about 20 rows of the footprint samples, evenly spaced."""
    lines = ["| s | RSS MiB | descriptors |", "| --- | --- | --- |"]
    samples = document["samples"]
    step = max(len(samples) // 20, 1)
    for sample in samples[::step]:
        lines.append(
            f"| {sample['seconds']:.0f} | {sample['rss_bytes'] / MiB:.1f} |"
            f" {sample['descriptors']} |"
        )
    return lines


def _markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = [
        f"# Soak run of {document['date']}",
        "",
        f"Command: `{document['command']}`; machine: {machine['cores']} cores, "
        f"{machine['cpu_model']}, Python {machine['python']}.",
        "",
        *_summary_table(document),
        "",
        "## Outcomes (warm-up and main phase)",
        "",
        *_outcome_table(document),
        "",
        "## Latency of responses other than 429 (s)",
        "",
        *_latency_table(document),
        "",
        "## RSS and descriptors over time",
        "",
        *_footprint_table(document),
        "",
        "## Checks",
        "",
    ]
    for check, found in document["findings"].items():
        verdict = "passed" if not found else f"FAILED ({len(found)}): {found[:3]}"
        lines.append(f"- {check}: {verdict}")
    return "\n".join(lines) + "\n"


def _run(profile: Profile) -> tuple[Report, list[str], int]:
    """Run the soak on a new watchdog; return the report, the orphans left and the exit status."""
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        root = Path(directory)
        payloads = Payloads(root, profile.seed, profile.max_body)
        watchdog = Watchdog.start(root / "server", server_settings(payloads))
        try:
            run = SoakRun(watchdog, payloads, profile)
            run.on_outcome = Progress(run, profile.warmup_requests + profile.requests)
            report = run.run()
        finally:
            exit_code = watchdog.stop()
        orphans_left = run.finish()
        log = watchdog.log()
    if "Traceback" in log:
        report.findings["tracebacks in the log"] = [
            line for line in log.splitlines() if "Error" in line
        ][:20]
    return report, orphans_left, -1 if exit_code is None else exit_code


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    profile = Profile(
        requests=arguments.requests,
        minutes=arguments.minutes,
        connections=arguments.connections,
        warmup_requests=arguments.warmup,
        seed=arguments.seed,
    )
    command = "scripts/soak " + " ".join(argv if argv is not None else sys.argv[1:])
    report, orphans_left, exit_code = _run(profile)

    document = _document(report, command.strip(), orphans_left, exit_code)
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    stem = "soak-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = arguments.output_dir / f"{stem}.json"
    markdown_path = arguments.output_dir / f"{stem}.md"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    markdown = _markdown(document)
    markdown_path.write_text(markdown)
    print(markdown)
    print(f"wrote {json_path} and {markdown_path}")

    failed = [check for check, found in document["findings"].items() if found]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
