"""workers above 1: one port served by several processes, with shared limits and metrics."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Watchdog, base_environment, children, free_port, run_watchdog, wait_until


def _samples(watchdog: Watchdog) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{watchdog.metrics_port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _wait_workers(watchdog: Watchdog, count: int) -> list[int]:
    wait_until(
        lambda: watchdog.log().count("Listening on") == count, 15, f"{count} workers to listen"
    )
    return [pid for pid, _ in children(watchdog.process.pid)]


def test_workers_share_port_and_metrics(start_watchdog: Watchdog.Factory) -> None:
    # The function prints the pid of its parent: the worker that spawned it.
    watchdog = start_watchdog(fprocess="sh -c 'echo $PPID'", workers="2")
    workers = _wait_workers(watchdog, 2)
    assert len(workers) == 2
    served = set()
    for _ in range(40):
        # A new connection each time: the kernel spreads connections, not requests.
        response = httpx.post(watchdog.url, content=b"", timeout=10)
        assert response.status_code == 200
        served.add(int(response.text))
    assert served == set(workers)

    samples = _samples(watchdog)
    assert samples[("http_requests_total", (("code", "200"), ("method", "post")))] == 40
    assert samples[("http_requests_in_flight", ())] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0


def test_max_inflight_holds_across_workers(start_watchdog: Watchdog.Factory) -> None:
    release = "$TMPDIR/release"
    script = f'if [ -n "$Http_Wait" ]; then while [ ! -e {release} ]; do sleep 0.02; done; fi'
    watchdog = start_watchdog(
        fprocess=f"sh -c '{script}; echo done'", workers="2", max_inflight="1"
    )
    _wait_workers(watchdog, 2)
    slow: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: slow.append(httpx.post(watchdog.url, headers={"Wait": "1"}, timeout=20))
    )
    waiting.start()
    wait_until(lambda: _samples(watchdog)[("http_requests_in_flight", ())] == 1, 10, "in flight")
    # Separate connections reach both workers, and each worker finds the slot taken.
    statuses = [httpx.post(watchdog.url, timeout=10).status_code for _ in range(20)]
    (watchdog.tmpdir / "release").touch()
    waiting.join(20)
    assert statuses == [429] * 20
    assert slow[0].status_code == 200
    assert httpx.post(watchdog.url, timeout=10).status_code == 200


def test_sigterm_stops_every_worker(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(workers="3", healthcheck_interval="0")
    workers = _wait_workers(watchdog, 3)
    with watchdog.client() as client:
        assert client.post("/", content=b"x").text == "x"
    watchdog.signal(signal.SIGTERM)
    assert watchdog.wait_exit() == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
    log = watchdog.log()
    assert log.count("Received SIGTERM: health now returns 503") == 3
    assert "Received SIGTERM: passing it on to 3 workers" in log
    assert "Watchdog stopped: every worker has exited" in log
    for number in (1, 2, 3):
        assert f"INFO watchdog [worker {number}]: Listening on http://" in log
    assert not watchdog.lock_path.exists()
    assert not [entry for entry in watchdog.tmpdir.iterdir() if "metrics" in entry.name]


def test_worker_death_stops_the_watchdog(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(workers="2", healthcheck_interval="0")
    first, second = _wait_workers(watchdog, 2)
    os.kill(first, signal.SIGKILL)
    assert watchdog.wait_exit() == 1
    assert not Path(f"/proc/{second}").exists()
    assert "was killed by SIGKILL before any signal: stopping the others" in watchdog.log()


def test_workers_drain_after_supervisor_killed(
    start_watchdog: Watchdog.Factory,
) -> None:
    script = "while [ ! -e $TMPDIR/release ]; do sleep 0.02; done; echo done"
    watchdog = start_watchdog(fprocess=f"sh -c '{script}'", workers="2")
    workers = _wait_workers(watchdog, 2)
    responses: list[httpx.Response] = []
    clients = [
        # Separate connections, so that both workers are likely to have requests in flight.
        threading.Thread(target=lambda: responses.append(httpx.post(watchdog.url, timeout=20)))
        for _ in range(6)
    ]
    for client in clients:
        client.start()
    wait_until(lambda: _samples(watchdog)[("http_requests_in_flight", ())] == 6, 10, "6 in flight")
    watchdog.process.kill()
    watchdog.wait_exit()
    wait_until(lambda: watchdog.log().count("The supervisor exited") == 2, 10, "both to stop")
    (watchdog.tmpdir / "release").touch()
    for client in clients:
        client.join(20)
    for pid in workers:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 15, f"worker {pid} to exit")
    # Linux may send the parent-death signal more than once; it must not force the exit.
    assert "again: stopping at once" not in watchdog.log()
    assert [response.status_code for response in responses] == [200] * 6


def test_second_watchdog_cannot_share_port(
    start_watchdog: Watchdog.Factory, tmp_path: Path
) -> None:
    first = start_watchdog(workers="2")
    _wait_workers(first, 2)
    environment = base_environment(tmp_path) | {
        "fprocess": "cat",
        "port": str(first.port),
        "metrics_port": str(free_port()),
        "workers": "2",
    }
    result = run_watchdog(environment)
    assert result.returncode == 2
    assert f"Failed to listen on port {first.port}" in result.stderr


def test_port_zero_shared_by_workers(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(workers="2", port="0", metrics_port="0")
    _wait_workers(watchdog, 2)
    lines = [line for line in watchdog.log().splitlines() if "Listening on http://" in line]
    ports = {line.rsplit(":", 1)[1] for line in lines}
    assert len(lines) == 2
    assert len(ports) == 1
    assert ports != {"0"}
    assert "listening on http://0.0.0.0:0/metrics" not in watchdog.log()


@pytest.mark.parametrize("value", ["0", "65", "two", "-1"])
def test_workers_out_of_range_rejected(tmp_path: Path, value: str) -> None:
    environment = base_environment(tmp_path) | {"fprocess": "cat", "workers": value}
    result = run_watchdog(environment)
    assert result.returncode == 2
    assert f"workers has the invalid value {value!r}: expected a whole number from 1 to 64" in (
        result.stderr
    )


def test_json_log_lines_name_the_worker(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(workers="2", log_format="json")
    _wait_workers(watchdog, 2)
    records = [json.loads(line) for line in watchdog.log().splitlines() if line.startswith("{")]
    listening = [record for record in records if record["message"].startswith("Listening on")]
    assert sorted(record["worker"] for record in listening) == [1, 2]
    started = [record for record in records if record["message"].startswith("Started worker")]
    assert len(started) == 2
    assert all("worker" not in record for record in started)
