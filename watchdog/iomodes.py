"""I/O modes: how a request body becomes the process input and a clean exit becomes a response.

`raw` is the classic behaviour: the body (or, with marshal_request, a JSON document of the request)
goes to stdin and stdout is the response body.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from . import environ
from .body import RequestBody
from .output import Output

__all__ = ["BadRequest", "Exchange", "IOMode", "RawMode"]

Headers = list[tuple[bytes, bytes]]


class Exchange(Protocol):
    """The input side and output side of one request in one I/O mode."""

    environment: dict[bytes, bytes]
    stdin: AsyncIterable[bytes] | None

    async def success_body(self, output: Output) -> Output:
        """Return what the response body of a clean exit is made of."""
        ...

    def close(self) -> None:
        """Release what the exchange created (files, directories); called whatever happened."""
        ...


class IOMode(Protocol):
    async def open(self, body: RequestBody, headers: Headers) -> Exchange:
        """Prepare the process input of one request; may raise BadRequest."""
        ...


class BadRequest(Exception):
    """A request body that the I/O mode cannot turn into process input; the handler returns 400."""


class _RawExchange:
    def __init__(self, stdin: AsyncIterable[bytes]) -> None:
        self.environment: dict[bytes, bytes] = {}
        self.stdin: AsyncIterable[bytes] | None = stdin

    async def success_body(self, output: Output) -> Output:
        return output

    def close(self) -> None:
        pass


class RawMode:
    """The body, or the marshalled request, is piped to stdin; stdout is the response."""

    def __init__(self, marshal_request: bool = False) -> None:
        self.marshal_request = marshal_request

    async def open(self, body: RequestBody, headers: Headers) -> Exchange:
        if not self.marshal_request:
            return _RawExchange(body)
        return _RawExchange(_once(environ.marshal_request(headers, await body.read())))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
