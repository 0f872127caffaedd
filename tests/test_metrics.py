"""Prometheus metrics on their own listener, counted from real requests."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Watchdog, wait_until


def _samples(watchdog: Watchdog) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{watchdog.metrics_port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_requests_by_code_and_method(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    script = (
        'if [ "$Http_Path" = /fail ]; then exit 3; fi; '
        'if [ "$Http_Path" = /slow ]; then sleep 2; fi; echo ok'
    )
    watchdog = start_watchdog(fprocess=f"sh -c '{script}'", max_inflight="1")
    with watchdog.client() as client:
        assert client.post("/").status_code == 200
        assert client.get("/").status_code == 200
        assert client.post("/fail").status_code == 500
        assert client.request("OPTIONS", "/").status_code == 405
        assert client.get("/_/health").status_code == 200
        slow = threading.Thread(target=lambda: httpx.post(f"{watchdog.url}/slow", timeout=10))
        slow.start()
        wait_until(
            lambda: _samples(watchdog)[("http_requests_in_flight", ())] == 1, 5, "1 in flight"
        )
        assert client.post("/").status_code == 429
        slow.join(10)

    samples = _samples(watchdog)
    assert samples[("http_requests_total", (("code", "200"), ("method", "post")))] == 2
    assert samples[("http_requests_total", (("code", "200"), ("method", "get")))] == 1
    assert samples[("http_requests_total", (("code", "500"), ("method", "post")))] == 1
    assert samples[("http_requests_total", (("code", "405"), ("method", "options")))] == 1
    assert samples[("http_requests_total", (("code", "429"), ("method", "post")))] == 1
    assert (
        samples[("http_request_duration_seconds_count", (("code", "200"), ("method", "post")))] == 2
    )
    assert samples[("http_requests_in_flight", ())] == 0
    # Health requests are not counted.
    assert sum(value for (name, _), value in samples.items() if name == "http_requests_total") == 6
    assert samples[("process_resident_memory_bytes", ())] > 0
