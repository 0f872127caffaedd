"""Sending responses over raw ASGI, and the capped log of a function's stderr."""

from __future__ import annotations

import logging

from starlette.types import Scope, Send

from .output import Output

__all__ = ["STDERR_LOG_LIMIT", "StderrLog", "send_output", "send_response"]

logger = logging.getLogger("watchdog")

# With combine_output false, at most this much of one request's stderr reaches the log, so a
# function that floods stderr cannot flood the log.
STDERR_LOG_LIMIT = 16 * 1024

Headers = list[tuple[bytes, bytes]]


async def send_response(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Send a whole response with a Content-Length."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_output(
    send: Send, status: int, prefix: bytes, output: Output, headers: Headers
) -> None:
    """Send `prefix` followed by the function output, streamed when it is in a temp file."""
    if not output.spooled:
        await send_response(send, status, prefix + output.getvalue(), headers)
        return
    length = str(len(prefix) + output.size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", length)],
        }
    )
    if prefix:
        await send({"type": "http.response.body", "body": prefix, "more_body": True})
    for chunk in output.chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class StderrLog:
    """Collect a function's stderr up to STDERR_LOG_LIMIT and log it as one record."""

    def __init__(self, scope: Scope) -> None:
        self._request = f"{scope['method']} {scope['path']}"
        self._parts: list[bytes] = []
        self._logged_size = 0
        self._dropped = 0

    def write(self, data: bytes) -> None:
        room = STDERR_LOG_LIMIT - self._logged_size
        if room > 0:
            self._parts.append(data[:room])
            self._logged_size += min(room, len(data))
        self._dropped += max(len(data) - max(room, 0), 0)

    def flush(self) -> None:
        if not self._logged_size:
            return
        text = b"".join(self._parts).decode("utf-8", "replace").rstrip("\n")
        suffix = f" ({self._dropped} more bytes not logged)" if self._dropped else ""
        logger.info("Function stderr of %s: %s%s", self._request, text, suffix)
        self._parts = []
        self._logged_size = 0
