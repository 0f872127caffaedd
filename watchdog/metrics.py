"""Prometheus metrics of function requests, served on their own listener.

With several workers, each worker writes its values to files in a shared directory
(prometheus-client's multiprocess mode) and the supervisor serves their sum.
"""

from __future__ import annotations

import os
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
    values,
)
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Handler", "Metrics", "MetricsListener", "shared_registry"]

# An ASGI endpoint that returns the status it sent, or 0 when it sent no response.
Handler = Callable[[Scope, Receive, Send], Awaitable[int]]

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds would fill the log


class MetricsListener:
    """Serve a registry's /metrics from a thread; the port is bound before the thread starts.

    Binding first lets the supervisor fork its workers while it has no thread yet.
    """

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        """Bind `port`; raises OSError when it is busy."""
        app = prometheus_client.make_wsgi_app(registry)
        self._server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port, which the kernel picked when 0 was given."""
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket; in a forked worker, only its copy closes."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()


def shared_registry(directory: str) -> CollectorRegistry:
    """Return the supervisor's registry: the workers' files summed, and its process metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    return registry


class Metrics:
    """The collectors of one watchdog, in a registry of their own."""

    def __init__(self, shared_directory: str | None = None) -> None:
        """Keep the values in memory, or with `shared_directory` in files there for a worker."""
        if shared_directory is not None:
            # prometheus-client reads the directory from this variable when it makes a value.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared_directory
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        if shared_directory is None:
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
            multiprocess_mode="livesum",
        )
        self._listener: MetricsListener | None = None
        # Label lookups take a lock and validate the labels, so each pair's children are kept.
        self._children: dict[tuple[int, str], tuple[Any, Any]] = {}

    def listen(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` from a thread and return the bound port.

        Raises OSError when the port is busy.
        """
        self._listener = MetricsListener(self.registry, port, host)
        self._listener.start()
        return self._listener.port

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def instrument(self, handler: Handler) -> ASGIApp:
        """Wrap the function route so that each request with a response is counted and timed."""
        return _Instrumented(handler, self)

    def record(self, status: int, method: str, seconds: float) -> None:
        """Count one request that got a response, and observe its duration."""
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
