"""Single-request HTTP clients: one small POST, and one streamed POST of a large body."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import random
import socket
import threading
import time
from typing import Any

from bench.servers import LOOPBACK

_CHUNK_SIZE = 1024 * 1024
_READ_SIZE = 1024 * 1024


def post_once(port: int, body: bytes, timeout_s: float) -> dict[str, Any]:
    """POST ``body`` to ``/`` and return the status, the start of the body and the latency.

    A failure to connect or read within ``timeout_s`` returns status None and the error.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    started = time.perf_counter()
    try:
        connection.request(
            "POST", "/", body=body, headers={"Content-Type": "application/octet-stream"}
        )
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as error:
        return {
            "status": None,
            "latency_s": round(time.perf_counter() - started, 4),
            "error": f"{type(error).__name__}: {error}",
        }
    finally:
        connection.close()
    return {
        "status": response.status,
        "latency_s": round(time.perf_counter() - started, 4),
        "body_bytes": len(data),
        "body_start": data[:200].decode(errors="replace"),
    }


class _BodySender(threading.Thread):
    """Thread that writes the request and a deterministic body of ``size`` bytes to a socket.

    The body is a fixed pseudo-random 1 MiB block whose first 8 bytes are replaced by the
    chunk's index, so no two chunks are equal and nothing larger than a block is held in
    memory. It hashes what it sends.
    """

    def __init__(self, sock: socket.socket, head: bytes, size: int) -> None:
        super().__init__(name="bench-body-sender", daemon=True)
        self._sock = sock
        self._head = head
        self._size = size
        self.sent = 0
        self.sha256 = hashlib.sha256()
        self.error: str | None = None

    def run(self) -> None:
        block = memoryview(random.Random(0).randbytes(_CHUNK_SIZE))
        try:
            self._sock.sendall(self._head)
            index = 0
            while self.sent < self._size:
                length = min(_CHUNK_SIZE, self._size - self.sent)
                chunk_start = index.to_bytes(8, "big")[:length]
                chunk_rest = block[len(chunk_start) : length]
                for part in (chunk_start, chunk_rest):
                    self._sock.sendall(part)
                    self.sha256.update(part)
                self.sent += length
                index += 1
        except OSError as error:
            self.error = f"{type(error).__name__}: {error}"


def post_streamed(port: int, size: int, timeout_s: float) -> dict[str, Any]:
    """POST a ``size``-byte body while reading the response, and compare their SHA-256.

    Sending and receiving run at the same time, so a server that streams the response while
    the request still arrives cannot deadlock the client. ``timeout_s`` limits each socket
    operation, not the whole transfer.
    """
    head = (
        f"POST / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    received = 0
    received_sha256 = hashlib.sha256()
    status = None
    error = None
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        sender = _BodySender(sock, head, size)
        sender.start()
        try:
            response = http.client.HTTPResponse(sock)
            response.begin()
            status = response.status
            while data := response.read(_READ_SIZE):
                received += len(data)
                received_sha256.update(data)
            response.close()
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            # Unblocks the sender if the server stopped reading the body. The socket may
            # already be disconnected, which shutdown reports as an error.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(timeout_s)
    wall_s = time.perf_counter() - started

    sent_digest = sender.sha256.hexdigest()
    received_digest = received_sha256.hexdigest()
    return {
        "status": status,
        "wall_s": round(wall_s, 3),
        "sent_bytes": sender.sent,
        "received_bytes": received,
        "sent_sha256": sent_digest,
        "received_sha256": received_digest,
        "sha256_match": status == 200 and sender.sent == size and sent_digest == received_digest,
        "error": error or sender.error,
    }
