"""Built-in HTTP/1.1 keep-alive load generator, run in a process of its own.

    python -m bench.loadgen --port 8080 --connections 16 --duration 10 --body-size 1024

Each of N connections sends a POST, waits for the whole response, records its status and
latency and sends the next one, for a fixed duration. The process prints one JSON object:
counts per status, latency percentiles overall and per status, socket errors and its own CPU
use, which shows whether the generator itself was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from bench.stats import latency_summary_ms

# How long a connection waits before it retries a refused connect, in seconds.
_RECONNECT_DELAY_S = 0.01


@dataclass
class _Run:
    """Shared state of all connections of one run."""

    request: bytes
    latencies_by_status: dict[int, list[int]] = field(default_factory=dict)
    connect_errors: int = 0
    read_errors: int = 0
    reconnects: int = 0
    stopping: bool = False

    def record(self, status: int, latency_ns: int) -> None:
        if not self.stopping:
            self.latencies_by_status.setdefault(status, []).append(latency_ns)


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Parse a response head into (status, content length, chunked, connection close)."""
    lines = head.split(b"\r\n")
    version, status_text = lines[0].split(b" ", 2)[:2]
    content_length = None
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            close = value == b"close"
    return int(status_text), content_length, chunked, close


def _chunked_length(buffer: bytearray) -> int:
    """Return the length of a complete chunked body at the start of buffer, or -1 if partial."""
    position = 0
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
        position = line_end + 2
        if size == 0:
            break
        position += size + 2
        if position > len(buffer):
            return -1
    # Trailer fields, if any, end with an empty line.
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        if line_end == position:
            return position + 2
        position = line_end + 2


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends the next request as soon as a response ends."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._sent_ns = 0
        self._in_flight = False
        self._head: tuple[int, int | None, bool, bool] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._in_flight = True
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(self._run.request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer and self._in_flight:
            if not self._take_response():
                return

    def _take_response(self) -> bool:
        """Consume one complete response from the buffer; return False if it is partial."""
        if self._head is None:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            head = self._parse_or_fail(bytes(self._buffer[:head_end]))
            del self._buffer[: head_end + 4]
            if head is None:
                return False
            if 100 <= head[0] < 200:  # an interim response; the final one follows
                return True
            self._head = head

        status, content_length, chunked, close = self._head
        if chunked:
            body_length = _chunked_length(self._buffer)
            if body_length < 0:
                return False
        elif content_length is not None:
            if len(self._buffer) < content_length:
                return False
            body_length = content_length
        elif status in (204, 304):
            body_length = 0
        else:
            return False  # the body ends when the server closes the connection
        del self._buffer[:body_length]
        self._finish(status, close)
        return True

    def _parse_or_fail(self, head: bytes) -> tuple[int, int | None, bool, bool] | None:
        try:
            return _parse_head(head)
        except ValueError:
            self._run.read_errors += 1
            self._in_flight = False
            assert self._transport is not None
            self._transport.close()
            return None

    def _finish(self, status: int, close: bool) -> None:
        self._run.record(status, time.perf_counter_ns() - self._sent_ns)
        self._head = None
        self._in_flight = False
        assert self._transport is not None
        if close or self._run.stopping:
            self._transport.close()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._in_flight and not self._run.stopping:
            head = self._head
            if head is not None and head[1] is None and not head[2]:
                self._finish(head[0], close=True)  # a body delimited by the close
            else:
                self._run.read_errors += 1
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _drive_connection(run: _Run, host: str, port: int, live: list[_Connection]) -> None:
    """Keep one connection open until the run stops, reconnecting when the server closes it."""
    loop = asyncio.get_running_loop()
    first = True
    while not run.stopping:
        if not first:
            run.reconnects += 1
        first = False
        try:
            _, connection = await loop.create_connection(lambda: _Connection(run), host, port)
        except OSError:
            run.connect_errors += 1
            await asyncio.sleep(_RECONNECT_DELAY_S)
            continue
        live.append(connection)
        await connection.closed
        live.remove(connection)


async def run_load(
    host: str, port: int, connections: int, duration_s: float, request: bytes
) -> dict[str, Any]:
    """Drive ``connections`` connections for ``duration_s`` seconds and summarise the responses."""
    run = _Run(request=request)
    live: list[_Connection] = []
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(_drive_connection(run, host, port, live)) for _ in range(connections)
    ]
    await asyncio.sleep(duration_s)
    run.stopping = True
    elapsed = time.perf_counter() - started
    for connection in list(live):
        connection.close()
    await asyncio.wait(tasks, timeout=5.0)
    for task in tasks:
        task.cancel()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)

    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    all_latencies = [value for values in run.latencies_by_status.values() for value in values]
    return {
        "connections": connections,
        "elapsed_s": round(elapsed, 3),
        "requests": len(all_latencies),
        "status_counts": {
            str(status): len(values) for status, values in sorted(run.latencies_by_status.items())
        },
        "latency_ms": latency_summary_ms(all_latencies),
        "latency_ms_by_status": {
            str(status): latency_summary_ms(values)
            for status, values in sorted(run.latencies_by_status.items())
        },
        "socket_errors": run.connect_errors + run.read_errors,
        "connect_errors": run.connect_errors,
        "read_errors": run.read_errors,
        "reconnects": run.reconnects,
        "loadgen_cpu_percent": round(100.0 * cpu_s / elapsed, 1),
    }


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """Return the bytes of a keep-alive POST request with the given body."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def _loop_factory(name: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Return the name and factory of the event loop: uvloop when installed, unless refused."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="server port")
    parser.add_argument("--path", default="/", help="request path (default /)")
    parser.add_argument("--connections", type=int, required=True, help="concurrent connections")
    parser.add_argument("--duration", type=float, required=True, help="run time in seconds")
    parser.add_argument("--body-size", type=int, default=1024, help="POST body size in bytes")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop implementation (default: uvloop if installed)",
    )
    args = parser.parse_args(argv)

    loop_name, factory = _loop_factory(args.event_loop)
    request = build_request(args.host, args.port, args.path, b"x" * args.body_size)
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(
            run_load(args.host, args.port, args.connections, args.duration, request)
        )
    result["tool"] = "builtin"
    result["event_loop"] = loop_name
    result["body_size"] = args.body_size
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
