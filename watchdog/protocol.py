"""The HTTP/1.1 connection protocol: uvicorn's httptools protocol with limits on the request head.

uvicorn (0.55) limits neither the size of the request line and headers read with httptools nor
the time they take to arrive. A client could send headers without end, or one byte at a time to
keep a connection open for ever. This protocol responds 431 (414 when the request target is
most of it) once a head grows past MAX_HEAD_SIZE, and 408 when a started head is not complete
within read_timeout. A connection with no request in progress is closed after read_timeout, the
default idle timeout of Go's net/http.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_SIZE", "protocol_class"]

logger = logging.getLogger("watchdog")

# The request line and headers together, as Go's net/http DefaultMaxHeaderBytes. The count is
# taken per read of up to 256 KiB, so a head may exceed it by less than one read before the 431.
MAX_HEAD_SIZE = 1024 * 1024


class HeadLimitProtocol(HttpToolsProtocol):
    """Reject request heads that are too large or too slow; see the module docstring."""

    # Seconds allowed for a request head, and for an idle connection; 0 means no limit.
    head_timeout = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_size = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_size += len(data)
        super().data_received(data)
        if self._in_head and self._head_size > MAX_HEAD_SIZE and not self.transport.is_closing():
            url = getattr(self, "url", b"")
            # Without a way to tell where the request line ended, a head that is mostly the
            # request target counts as a long URI.
            status = 414 if 2 * len(url) > self._head_size else 431
            self._reject(status, f"Request line and headers are larger than {MAX_HEAD_SIZE} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What follows on the connection is the head of the next request.
        self._in_head = True
        self._head_size = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._serving():
            self._start_head_timer()

    def _serving(self) -> bool:
        """True while a request whose head is complete has no complete response yet."""
        return self.cycle is not None and not self.cycle.response_complete

    def _start_head_timer(self) -> None:
        if self.head_timeout and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._serving():
            return  # the timer starts again when the response is complete
        if self._in_head and self._head_size:
            self._reject(
                408,
                f"Timed out reading the request headers: read_timeout is {self.head_timeout:g}s",
            )
        else:
            # Idle, or still sending the body of a request that already has its response.
            self.transport.close()

    def _reject(self, status: int, reason: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        logger.warning("Rejected a request from %s with %d: %s", client, status, reason)
        if not self._serving():
            # A response in progress would be corrupted by another one, so it is only cut short.
            body = (reason + "\n").encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
        self.transport.close()


def protocol_class(read_timeout: float) -> type[HeadLimitProtocol]:
    """Return the protocol class for uvicorn, with the head deadline set to `read_timeout`."""
    return type("WatchdogProtocol", (HeadLimitProtocol,), {"head_timeout": read_timeout})
