"""Prometheus metrics of function requests, served on their own listener."""

from __future__ import annotations

import time
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics"]

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The collectors of one watchdog, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "http_requests_total",
            "Function requests answered, by status code and lower-case method.",
            ["code", "method"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Seconds from the request to the end of its response, by status code and method.",
            ["code", "method"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight",
            "Function requests being served.",
            registry=self.registry,
        )
        self._server: Any = None

    def listen(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` from a thread; raises OSError when the port is busy."""
        self._server, _ = prometheus_client.start_http_server(port, host, self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def instrument(self, app: ASGIApp) -> ASGIApp:
        """Wrap the function route so that each request with a response is counted and timed."""
        return _Instrumented(app, self)


class _Instrumented:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        status = 0

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            # A request whose client left before any response was sent is not counted, so the
            # totals equal what clients received.
            if status:
                labels = (str(status), scope["method"].lower())
                self.metrics.requests.labels(*labels).inc()
                self.metrics.duration.labels(*labels).observe(time.monotonic() - started)
