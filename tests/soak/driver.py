"""Run the soak workload against one watchdog and check it from the clients' and the system's side.

The run has a warm-up phase, after which the watchdog's RSS and descriptors are taken as the
baseline, and a main phase. Each phase ends quiet: every client connection closed, no function
process left. The checks then compare the quiet watchdog with its baseline, the metrics with what
the clients saw, and list the temp dir. `finish` checks, after the watchdog stopped, that the
background processes left on purpose were stopped with it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.helpers import Watchdog, wait_until
from tests.soak.client import Connection
from tests.soak.procfs import ProcessSampler, children, open_descriptors, resident_bytes
from tests.soak.workload import KINDS, MAX_BODY, MiB, Outcome, Payloads, Request, execute, make_plan

__all__ = ["Profile", "Report", "SoakRun", "server_settings"]

FUNCTION = Path(__file__).resolve().parent.parent / "functions" / "soak_function.sh"
MAX_INFLIGHT = 8
EXEC_TIMEOUT = 1.0
ORPHAN_SECONDS = "4.321"
ORPHAN_COMMAND = b"sleep\0" + ORPHAN_SECONDS.encode()


def server_settings(payloads: Payloads, **overrides: str) -> dict[str, str]:
    """Return the watchdog settings of the soak: max_inflight=8, exec_timeout=1."""
    settings = {
        "fprocess": str(FUNCTION),
        "max_inflight": str(MAX_INFLIGHT),
        "exec_timeout": f"{EXEC_TIMEOUT:g}s",
        "read_timeout": "10s",
        "write_timeout": "10s",
        "SOAK_BIG_OUTPUT": str(payloads.big_output),
        "SOAK_ORPHAN_SECONDS": ORPHAN_SECONDS,
    }
    settings.update(overrides)
    return settings


@dataclasses.dataclass
class Profile:
    """The size of a run. `minutes` ends the main phase early when the time is up."""

    requests: int
    minutes: float | None = None
    connections: int = 64
    warmup_requests: int = 400
    seed: int = 1
    max_body: int = MAX_BODY
    request_timeout: float = 30.0
    # After a 429 a client waits up to this long before its next request, as a client that
    # honours Retry-After would, so that not every request of the mix is rejected.
    backoff_after_429: float = 0.25
    rss_bound: int = 16 * MiB
    descriptor_bound: int = 2


@dataclasses.dataclass
class Footprint:
    rss_bytes: int
    descriptors: int
    targets: list[str]


@dataclasses.dataclass
class Report:
    """The figures of a run and the findings of each check (an empty list means it passed)."""

    profile: Profile
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    latency: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    baseline: Footprint | None = None
    final: Footprint | None = None
    max_functions: int = 0
    max_zombies: int = 0
    scans: int = 0
    orphans_seen: int = 0
    samples: list[dict[str, float]] = dataclasses.field(default_factory=list)
    metrics: dict[str, int] = dataclasses.field(default_factory=dict)
    findings: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _outcome_label(outcome: Outcome) -> str:
    if outcome.status is not None:
        return str(outcome.status)
    if outcome.request.action == "abort_upload" and outcome.error is None:
        return "aborted"
    return "error"


class SoakRun:
    """One soak against a running watchdog."""

    def __init__(self, watchdog: Watchdog, payloads: Payloads, profile: Profile) -> None:
        self.watchdog = watchdog
        self.payloads = payloads
        self.profile = profile
        self.pid = watchdog.process.pid
        self.sampler = ProcessSampler(self.pid, ORPHAN_COMMAND)
        self.sampler.limit = MAX_INFLIGHT
        self.outcomes: list[Outcome] = []
        self.hang_snapshots: list[str] = []
        # Called from the client threads with every outcome, for progress output.
        self.on_outcome: Callable[[Outcome], None] | None = None
        self._idle_sockets = self._socket_count()

    # Phases

    def run_requests(
        self,
        plan: Sequence[Request],
        *,
        until: float | None = None,
        stop: threading.Event | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Send `plan` over `profile.connections` client threads; return the outcomes.

        Stops early at the monotonic time `until` or when `stop` is set.
        """
        requests: Iterator[Request] = iter(plan)
        lock = threading.Lock()
        outcomes: list[Outcome] = []
        stop = stop or threading.Event()
        on_outcome = on_outcome or self.on_outcome

        def next_request() -> Request | None:
            with lock:
                if stop.is_set() or (until is not None and time.monotonic() >= until):
                    return None
                return next(requests, None)

        def client(number: int) -> None:
            generator = random.Random(self.profile.seed * 1000 + number)
            connection: Connection | None = None
            try:
                while (request := next_request()) is not None:
                    outcome, connection = execute(
                        request, connection, self._connect, self.payloads,
                        self.profile.request_timeout,
                    )  # fmt: skip
                    if outcome.error and outcome.error.startswith("TimeoutError"):
                        self._snapshot_hang(outcome)
                    with lock:
                        outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
                    if outcome.status == 429:
                        stop.wait(generator.uniform(0, self.profile.backoff_after_429))
            finally:
                if connection is not None:
                    connection.close()

        threads = [
            threading.Thread(target=client, args=(number,), name=f"soak-client-{number}")
            for number in range(self.profile.connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.outcomes.extend(outcomes)
        return outcomes

    def _connect(self, deadline: float) -> Connection:
        return Connection(self.watchdog.port, deadline)

    def _snapshot_hang(self, outcome: Outcome) -> None:
        found = children(self.pid)
        self.hang_snapshots.append(
            f"request {outcome.request} timed out after {outcome.seconds:.1f}s; children of the "
            f"watchdog then: {[(child.pid, child.state, child.command) for child in found]}"
        )

    def run(self) -> Report:
        """Warm up, take the baseline, run the main phase and check everything but the stop."""
        profile = self.profile
        report = Report(profile)
        self.sampler.start()
        try:
            warmup = make_plan(profile.warmup_requests, profile.seed + 1, profile.max_body)
            self.run_requests(warmup)
            self.wait_quiet()
            report.baseline = self.footprint()
            main = make_plan(profile.requests, profile.seed, profile.max_body, len(warmup))
            until = None
            if profile.minutes is not None:
                until = time.monotonic() + profile.minutes * 60
            started = time.monotonic()
            outcomes = self.run_requests(main, until=until)
            report.seconds = time.monotonic() - started
            report.requests = len(outcomes)
            self.wait_quiet()
        finally:
            self.sampler.stop()
        self._check(report)
        return report

    # Observations

    def _socket_count(self) -> int:
        return sum(target.startswith("socket:") for target in open_descriptors(self.pid))

    def function_processes(self) -> int:
        return len(self.sampler.functions(children(self.pid)))

    def wait_quiet(self, timeout: float = 30.0) -> None:
        """Wait until no function runs and the watchdog has no client connection open."""

        def quiet() -> bool:
            return (
                self.function_processes() == 0
                and self._socket_count() <= self._idle_sockets
                and self.metrics().get("in_flight", 0) == 0
            )

        wait_until(quiet, timeout, "the watchdog to finish every request and close connections")

    def footprint(self) -> Footprint:
        targets = open_descriptors(self.pid)
        return Footprint(resident_bytes(self.pid), len(targets), sorted(targets))

    def metrics(self) -> dict[str, int]:
        """Return http_requests_total per `code method` and the in-flight gauge as `in_flight`."""
        url = f"http://127.0.0.1:{self.watchdog.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        totals: dict[str, int] = {}
        pattern = re.compile(r'http_requests_total\{code="(\d+)",method="(\w+)"\} (\S+)')
        for match in pattern.finditer(text):
            totals[f"{match[1]} {match[2]}"] = int(float(match[3]))
        in_flight = re.search(r"^http_requests_in_flight (\S+)$", text, re.MULTILINE)
        totals["in_flight"] = int(float(in_flight[1])) if in_flight else -1
        return totals

    # Checks

    def _check(self, report: Report) -> None:
        outcomes = self.outcomes
        profile = self.profile
        findings = report.findings
        statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for outcome in outcomes:
            statuses[f"{outcome.request.kind} {outcome.request.action}"][
                _outcome_label(outcome)
            ] += 1
        report.statuses = {name: dict(counter) for name, counter in sorted(statuses.items())}
        report.latency = _latency(outcomes)

        findings["unexpected responses"] = [
            f"{outcome.request}: {outcome.problem}" for outcome in outcomes if outcome.problem
        ]
        findings["transport errors"] = [
            f"{outcome.request}: {outcome.error}"
            for outcome in outcomes
            if outcome.error is not None and not outcome.error.startswith("TimeoutError")
        ]
        findings["hung requests"] = self.hang_snapshots
        findings["planned outcome never seen"] = _missing_planned(outcomes)
        timeouts = [
            outcome
            for outcome in outcomes
            if outcome.request.kind == "timeout" and outcome.status == 408
        ]
        findings["exec_timeout answered late"] = [
            f"{outcome.request}: {outcome.seconds:.2f}s"
            for outcome in timeouts
            if outcome.request.size <= 64 * 1024 and outcome.seconds > EXEC_TIMEOUT + 2.0
        ]

        report.max_functions = self.sampler.max_functions
        report.max_zombies = self.sampler.max_zombies
        report.scans = self.sampler.scans
        report.orphans_seen = len(self.sampler.orphans)
        report.samples = [dataclasses.asdict(sample) for sample in self.sampler.samples]
        findings["more function processes than max_inflight"] = [
            f"at {seconds:.3f}s: {[(child.pid, child.state, child.command) for child in found]}"
            for seconds, found in self.sampler.over_limit
        ]

        findings["child processes left"] = self._leftover_children()
        findings["temp files left"] = sorted(
            path.name for path in self.watchdog.tmpdir.iterdir() if path.name != ".lock"
        )
        final = self._settled_footprint(report.baseline)
        report.final = final
        baseline = report.baseline
        assert baseline is not None
        findings["descriptors grew"] = []
        if final.descriptors > baseline.descriptors + profile.descriptor_bound:
            added = sorted(set(final.targets) - set(baseline.targets))
            findings["descriptors grew"].append(
                f"{baseline.descriptors} after warm-up, {final.descriptors} after the run: {added}"
            )
        findings["RSS grew"] = []
        if final.rss_bytes > baseline.rss_bytes + profile.rss_bound:
            findings["RSS grew"].append(
                f"{baseline.rss_bytes / MiB:.1f} MiB after warm-up, "
                f"{final.rss_bytes / MiB:.1f} MiB after the run"
            )
        report.metrics = self.metrics()
        findings["metrics differ from the clients"] = _compare_metrics(outcomes, report.metrics)

    def _leftover_children(self) -> list[str]:
        """List children other than the deliberate orphans, once zombies had time to be reaped."""

        def unexpected() -> list[str]:
            return [
                f"{child.pid} {child.state} {child.command!r}"
                for child in children(self.pid)
                if child.zombie or child.command != ORPHAN_COMMAND
            ]

        try:
            wait_until(lambda: not unexpected(), 5, "only orphans left as children")
        except AssertionError:
            return unexpected()
        return []

    def _settled_footprint(self, baseline: Footprint | None) -> Footprint:
        """Read the footprint, giving connections in their last moments a few seconds to close."""
        assert baseline is not None
        bound = baseline.descriptors + self.profile.descriptor_bound
        # A timeout is reported by the check, with the list of descriptors.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: len(open_descriptors(self.pid)) <= bound, 5, "descriptors")
        return self.footprint()

    def finish(self) -> list[str]:
        """After the watchdog stopped: return the deliberate orphans that are still alive."""
        orphans = self.sampler.orphans | {
            child.pid for child in children(self.pid) if child.command == ORPHAN_COMMAND
        }

        def alive() -> list[int]:
            found = []
            for pid in orphans:
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
                    state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                except OSError:
                    continue
                if command == ORPHAN_COMMAND and state not in (b"Z", b"X"):
                    found.append(pid)
            return found

        try:
            wait_until(lambda: not alive(), 10, "the orphans to be stopped")
        except AssertionError:
            return [f"orphan {pid} still running after the watchdog stopped" for pid in alive()]
        return []


def _latency(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for outcome in outcomes:
        if outcome.status is not None and outcome.status != 429:
            by_kind[outcome.request.kind].append(outcome.seconds)
    figures = {}
    for kind, seconds in sorted(by_kind.items()):
        seconds.sort()
        figures[kind] = {
            "count": len(seconds),
            "p50": round(statistics.median(seconds), 4),
            "p99": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))], 4),
            "max": round(seconds[-1], 4),
        }
    return figures


def _missing_planned(outcomes: list[Outcome]) -> list[str]:
    """Name each function whose planned outcome (200, 500, 408) never came back.

    408 and 429 are correct for every request, so without this a function that always timed
    out would pass unnoticed.
    """
    seen = {
        (outcome.request.kind, outcome.status)
        for outcome in outcomes
        if outcome.request.action == "normal"
    }
    planned_kinds = {outcome.request.kind for outcome in outcomes}
    return [
        f"{kind.name}: no {kind.status}"
        for kind in KINDS
        if kind.name in planned_kinds and (kind.name, kind.status) not in seen
    ]


def _compare_metrics(outcomes: list[Outcome], metrics: dict[str, int]) -> list[str]:
    """Compare http_requests_total with the statuses the clients read.

    Aborted uploads (PUT) are the exception: the server may have sent a 429 that the client never
    read, so their total may be anything from 0 to the number of aborted uploads.
    """
    seen: collections.Counter[str] = collections.Counter()
    aborted_uploads = 0
    for outcome in outcomes:
        if outcome.request.action == "abort_upload":
            aborted_uploads += 1
        elif outcome.status is not None:
            seen[f"{outcome.status} {outcome.request.method.lower()}"] += 1
    counted = {key: value for key, value in metrics.items() if key != "in_flight"}
    differences = []
    for key in sorted(set(seen) | set(counted)):
        if key.endswith(" put"):
            continue
        if seen[key] != counted.get(key, 0):
            differences.append(
                f"{key}: clients read {seen[key]}, metrics count {counted.get(key, 0)}"
            )
    put_total = sum(value for key, value in counted.items() if key.endswith(" put"))
    put_codes = {key for key in counted if key.endswith(" put")} - {"429 put"}
    if put_total > aborted_uploads or put_codes:
        differences.append(
            f"aborted uploads: {aborted_uploads}, metrics count {put_total} with codes "
            f"{sorted(key for key in counted if key.endswith(' put'))}"
        )
    return differences
