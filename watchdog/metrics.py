"""Prometheus metrics of function requests, served on their own listener."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Handler", "Metrics"]

# An ASGI endpoint that returns the status it answered, or 0 when it sent no response.
Handler = Callable[[Scope, Receive, Send], Awaitable[int]]

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
        # Label lookups take a lock and validate the labels, so each pair's children are kept.
        self._children: dict[tuple[int, str], tuple[Any, Any]] = {}

    def listen(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` from a thread; raises OSError when the port is busy."""
        self._server, _ = prometheus_client.start_http_server(port, host, self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def instrument(self, handler: Handler) -> ASGIApp:
        """Wrap the function route so that each request with a response is counted and timed."""
        return _Instrumented(handler, self)

    def record(self, status: int, method: str, seconds: float) -> None:
        """Count one answered request and observe its duration."""
        key = (status, method)
        children = self._children.get(key)
        if children is None:
            labels = (str(status), method.lower())
            children = (self.requests.labels(*labels), self.duration.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _Instrumented:
    def __init__(self, handler: Handler, metrics: Metrics) -> None:
        self.handler = handler
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        status = 0
        self.metrics.in_flight.inc()
        try:
            status = await self.handler(scope, receive, send)
        finally:
            self.metrics.in_flight.dec()
            # A request whose client left before any response was sent is not counted, so the
            # totals equal what clients received.
            if status:
                self.metrics.record(status, scope["method"], time.monotonic() - started)
