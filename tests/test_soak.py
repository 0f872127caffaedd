"""Soak, short profile: the mixed workload of tests/soak against one real server.

scripts/soak runs the same workload for 100,000 requests or 30 minutes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers import Watchdog
from tests.soak.client import Connection
from tests.soak.driver import MAX_INFLIGHT, Profile, SoakRun, server_settings
from tests.soak.procfs import ProcessSampler
from tests.soak.workload import Payloads

SHORT_PROFILE = Profile(requests=5000, warmup_requests=600, connections=64, seed=7)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_soak_short_profile(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    payloads = Payloads(tmp_path, SHORT_PROFILE.seed, SHORT_PROFILE.max_body)
    watchdog = start_watchdog(**server_settings(payloads))
    run = SoakRun(watchdog, payloads, SHORT_PROFILE)

    report = run.run()
    findings = report.findings

    assert report.requests == SHORT_PROFILE.requests
    assert findings["unexpected responses"] == []
    assert findings["transport errors"] == []
    assert findings["hung requests"] == []
    assert findings["planned outcome never seen"] == []
    assert findings["exec_timeout answered late"] == []
    assert findings["more function processes than max_inflight"] == []
    assert report.scans > 100, "the sampler scanned /proc too rarely to count anything"
    assert report.max_functions == MAX_INFLIGHT, "the workload never filled every slot"
    assert report.orphans_seen > 0, "no background process outlived its request"
    assert findings["child processes left"] == []
    assert findings["temp files left"] == []
    assert findings["descriptors grew"] == []
    assert findings["RSS grew"] == []
    assert findings["metrics differ from the clients"] == []

    assert watchdog.stop() == 0
    assert run.finish() == []
    assert "Traceback" not in watchdog.log()


@pytest.mark.slow
def test_killed_process_keeps_slot_until_reaped(start_watchdog: Watchdog.Factory) -> None:
    # Every request is killed at exec_timeout; a slot freed before its process is gone lets a
    # ninth process start beside eight dying ones.
    watchdog = start_watchdog(fprocess="sleep 5", max_inflight="8", exec_timeout="100ms")
    sampler = ProcessSampler(watchdog.process.pid, orphan_command=b"")
    sampler.limit = 8
    statuses: list[int] = []
    stop_at = time.monotonic() + 5

    def client() -> None:
        while time.monotonic() < stop_at:
            deadline = time.monotonic() + 10
            connection = Connection(watchdog.port, deadline)
            try:
                connection.send_request("POST", "/", memoryview(b""), deadline, keep_alive=False)
                statuses.append(connection.read_response(deadline).status)
            finally:
                connection.close()

    threads = [threading.Thread(target=client) for _ in range(24)]
    sampler.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.stop()

    assert set(statuses) == {408, 429}
    assert statuses.count(408) > 100
    assert sampler.over_limit == []
    assert sampler.max_functions == 8
