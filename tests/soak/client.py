"""A raw-socket HTTP/1.1 client for load and fault tests.

Unlike httpx it can stop half-way through an upload or a download, send any chunk sizes, and
report exactly how far an exchange got, so a test can tell a refused connection from a cut
response. Every blocking call is bounded by the caller's deadline (a `time.monotonic()` value).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import time
from collections.abc import Callable

__all__ = ["LOOPBACK", "Connection", "Response", "ResponseError"]

LOOPBACK = "127.0.0.1"
# Bytes of the response body kept for text checks; the whole body is only hashed.
BODY_PREFIX_SIZE = 4096
_MAX_HEAD_SIZE = 64 * 1024
_RECEIVE_SIZE = 256 * 1024

Consumer = Callable[[bytes], None]


class ResponseError(Exception):
    """The server closed the connection or sent bytes that are not an HTTP/1.1 response."""


@dataclasses.dataclass
class Response:
    """One response: the status, headers, and the body as a length, a SHA-256 and a prefix."""

    status: int
    headers: dict[bytes, bytes]
    length: int
    digest: bytes
    prefix: bytes
    complete: bool
    keep_alive: bool


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("request deadline passed")
    return remaining


class Connection:
    """One TCP connection to a server on the loopback interface."""

    def __init__(self, port: int, deadline: float) -> None:
        self.socket = socket.create_connection((LOOPBACK, port), timeout=_remaining(deadline))
        self.responses = 0
        self.received = 0  # response bytes read on this connection, head included
        self._buffer = bytearray()

    @property
    def bytes_received(self) -> int:
        """Response bytes that arrived on this connection so far, read or buffered."""
        return self.received + len(self._buffer)

    def close(self) -> None:
        self.socket.close()

    def send(self, data: bytes | memoryview, deadline: float) -> None:
        self.socket.settimeout(_remaining(deadline))
        self.socket.sendall(data)

    def send_request(
        self,
        method: str,
        path: str,
        body: memoryview,
        deadline: float,
        *,
        keep_alive: bool = True,
        chunk_sizes: random.Random | None = None,
        send_limit: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a request with a Content-Length, or chunked when `chunk_sizes` is given.

        `send_limit` stops after that many body bytes, as a client that goes away mid-upload.
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}"]
        if chunk_sizes is not None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), deadline)
        limit = len(body) if send_limit is None else min(send_limit, len(body))
        if chunk_sizes is None:
            self.send(body[:limit], deadline)
            return
        offset = 0
        while offset < limit:
            size = min(chunk_sizes.randint(1, 256 * 1024), limit - offset)
            self.send(b"%x\r\n" % size, deadline)
            self.send(body[offset : offset + size], deadline)
            self.send(b"\r\n", deadline)
            offset += size
        if send_limit is None or send_limit >= len(body):
            self.send(b"0\r\n\r\n", deadline)

    def _fill(self, deadline: float) -> None:
        self.socket.settimeout(_remaining(deadline))
        data = self.socket.recv(_RECEIVE_SIZE)
        if not data:
            raise ResponseError(
                f"connection closed after {self.received + len(self._buffer)} response bytes"
            )
        self._buffer += data

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.received += len(data)
        return data

    def _read_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD_SIZE:
                raise ResponseError("response line longer than 64 KiB")
            self._fill(deadline)
        end = self._buffer.index(b"\r\n")
        line = self._take(end + 2)
        return line[:-2]

    def read_response(
        self, deadline: float, *, head_only: bool = False, stop_after: int | None = None
    ) -> Response:
        """Read one response; with `stop_after`, stop once that many body bytes arrived.

        `head_only` is for responses to HEAD, which have no body even when a header gives a length.
        """
        status_line = self._read_line(deadline)
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise ResponseError(f"invalid status line {status_line[:200]!r}")
        status = int(rest[:3])
        headers: dict[bytes, bytes] = {}
        while True:
            line = self._read_line(deadline)
            if not line:
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        digest = hashlib.sha256()
        prefix = bytearray()
        length = 0

        def consume(data: bytes) -> None:
            nonlocal length
            digest.update(data)
            if len(prefix) < BODY_PREFIX_SIZE:
                prefix.extend(data[: BODY_PREFIX_SIZE - len(prefix)])
            length += len(data)

        complete = True
        if head_only or status in (204, 304) or 100 <= status < 200:
            pass
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            complete = self._read_chunked(deadline, consume, stop_after)
        elif b"content-length" in headers:
            complete = self._read_exactly(
                int(headers[b"content-length"]), deadline, consume, stop_after
            )
        else:
            keep_alive = False
            complete = self._read_to_end(deadline, consume, stop_after)
        self.responses += 1
        return Response(
            status, headers, length, digest.digest(), bytes(prefix), complete, keep_alive
        )

    def _read_exactly(
        self, size: int, deadline: float, consume: Consumer, stop_after: int | None
    ) -> bool:
        left = size
        while left:
            if not self._buffer:
                self._fill(deadline)
            data = self._take(min(left, len(self._buffer)))
            consume(data)
            left -= len(data)
            if stop_after is not None and size - left >= stop_after and left:
                return False
        return True

    def _read_chunked(self, deadline: float, consume: Consumer, stop_after: int | None) -> bool:
        read = 0
        while True:
            size_line = self._read_line(deadline).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ResponseError(f"invalid chunk size {size_line[:40]!r}") from None
            if size == 0:
                while self._read_line(deadline):  # trailers
                    pass
                return True
            if not self._read_exactly(size, deadline, consume, None):
                return False
            read += size
            while len(self._buffer) < 2:
                self._fill(deadline)
            if self._take(2) != b"\r\n":
                raise ResponseError("chunk not followed by CRLF")
            if stop_after is not None and read >= stop_after:
                return False

    def _read_to_end(self, deadline: float, consume: Consumer, stop_after: int | None) -> bool:
        read = 0
        while True:
            if self._buffer:
                data = self._take(len(self._buffer))
                consume(data)
                read += len(data)
                if stop_after is not None and read >= stop_after:
                    return False
            self.socket.settimeout(_remaining(deadline))
            data = self.socket.recv(_RECEIVE_SIZE)
            if not data:
                return True
            self._buffer += data
