"""The ASGI application: the health route and the function route."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .handler import FunctionHandler
from .lifecycle import Lifecycle
from .metrics import Metrics
from .responses import send_response

__all__ = ["HealthEndpoint", "WatchdogApp", "build_app"]

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


class WatchdogApp:
    """Send the exact health path to `health` and every other path to `function`.

    Two routes need no router: a path comparison costs less per request than starlette's Router,
    which matches a pattern per route and copies the scope. Without Starlette's error and
    exception middleware, the handler responds to every failure itself, and uvicorn returns 500
    for anything that escapes it.
    """

    def __init__(self, health: ASGIApp, function: ASGIApp) -> None:
        self.health = health
        self.function = function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn runs with lifespan and WebSockets off, so every scope is an HTTP request.
        if scope["path"] == HEALTH_PATH:
            await self.health(scope, receive, send)
        else:
            await self.function(scope, receive, send)


def build_app(handler: FunctionHandler, lifecycle: Lifecycle, metrics: Metrics) -> WatchdogApp:
    """Build the app: health from `lifecycle`, and the function counted by `metrics`."""
    return WatchdogApp(HealthEndpoint(lifecycle), metrics.instrument(handler.handle))
