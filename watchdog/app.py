"""The ASGI application: the health route and the function route."""

from __future__ import annotations

from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .handler import FunctionHandler
from .lifecycle import Lifecycle
from .metrics import Metrics
from .responses import send_response

__all__ = ["HealthEndpoint", "build_app"]

HEALTH_PATH = "/_/health"


class HealthEndpoint:
    """`GET /_/health`: 200 OK while the watchdog accepts work, 503 otherwise; never forks."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await send_response(send, 405, b"", [(b"allow", b"GET")])
        elif self.lifecycle.healthy():
            await send_response(send, 200, b"OK", [(b"content-type", b"text/plain")])
        else:
            await send_response(send, 503, b"", [])


def build_app(handler: FunctionHandler, lifecycle: Lifecycle, metrics: Metrics) -> Router:
    """Route the exact health path to HealthEndpoint and every other path to the function.

    A bare Router, without Starlette's error and exception middleware: the handler responds to
    every failure itself, and uvicorn returns 500 for anything that escapes it.
    """
    return Router(
        routes=[
            Route(HEALTH_PATH, HealthEndpoint(lifecycle)),
            Route("/{path:path}", metrics.instrument(handler)),
        ]
    )
