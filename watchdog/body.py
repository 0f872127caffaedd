"""The request body as an async iterator over ASGI `receive`, with read_timeout and size limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.types import Message, Receive

__all__ = ["BodyTimeout", "BodyTooLarge", "ClientDisconnect", "RequestBody"]


class ClientDisconnect(Exception):
    """The client closed the connection before the response was sent."""


class BodyTimeout(Exception):
    """The body did not arrive within read_timeout."""


class BodyTooLarge(Exception):
    """The body is larger than max_body_size."""


class RequestBody:
    """Iterate once over the body chunks of one request.

    `complete` is set when the last chunk was received, so a watcher can then wait for a
    disconnect on the same `receive` without taking a body chunk from the reader.
    """

    def __init__(self, receive: Receive, read_timeout: float, max_size: int) -> None:
        self.complete = asyncio.Event()
        self.size = 0
        self._receive = receive
        self._deadline = time.monotonic() + read_timeout if read_timeout else None
        self._max_size = max_size

    async def _next_message(self) -> Message:
        if self._deadline is None:
            return await self._receive()
        remaining = self._deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0)):
                return await self._receive()
        except TimeoutError:
            raise BodyTimeout from None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.complete.is_set():
            message = await self._next_message()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            if not message.get("more_body", False):
                self.complete.set()
            if isinstance(chunk, bytes) and chunk:
                self.size += len(chunk)
                if self._max_size and self.size > self._max_size:
                    raise BodyTooLarge
                yield chunk

    async def read(self) -> bytes:
        """Return the whole body at once; for modes that need it whole, such as marshal_request."""
        return b"".join([chunk async for chunk in self])

    async def wait_disconnect(self) -> None:
        """Return when the client disconnects; call only once the body is complete."""
        await self.complete.wait()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return
