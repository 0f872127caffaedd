"""Hostile and malformed input: oversized and slow request heads, broken framing, pipelining,
HTTP/1.0, and every configuration option with values outside its form."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Watchdog, base_environment, wait_until
from tests.soak.client import Connection, ResponseError
from tests.soak.procfs import children
from watchdog.config import OPTIONS, ConfigError, load_config
from watchdog.protocol import MAX_HEAD_SIZE

READ_TIMEOUT = 1.0
MAX_BODY_SIZE = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchdog]:
    """One echo server for the module; each start of the function adds a line to $TMPDIR/runs."""
    watchdog = Watchdog.start(
        tmp_path_factory.mktemp("malformed"),
        {
            "fprocess": "sh -c 'echo run >> \"$TMPDIR/runs\"; exec cat'",
            "read_timeout": f"{READ_TIMEOUT:g}s",
            "max_body_size": str(MAX_BODY_SIZE),
        },
    )
    yield watchdog
    assert watchdog.stop() == 0
    assert "Traceback" not in watchdog.log()


def _runs(watchdog: Watchdog) -> int:
    path = watchdog.tmpdir / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _exchange(watchdog: Watchdog, data: bytes, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    """Send raw bytes on a new connection; return (status, body) of each response until it closes.

    A connection that stays open after its last response is closed by the watchdog's idle
    timeout, which is read_timeout.
    """
    deadline = time.monotonic() + timeout
    connection = Connection(watchdog.port, deadline)
    responses = []
    try:
        connection.send(data, deadline)
        while True:
            try:
                response = connection.read_response(deadline)
            except ResponseError:
                if connection.bytes_received == connection.received:
                    break  # closed between responses
                raise
            except ConnectionResetError:
                break
            responses.append((response.status, response.prefix))
    finally:
        connection.close()
    return responses


def _assert_still_serving(watchdog: Watchdog) -> None:
    assert watchdog.process.poll() is None
    responses = _exchange(
        watchdog, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    assert responses == [(200, b"ok")]
    wait_until(lambda: children(watchdog.process.pid) == [], 5, "no function process left")


# Request heads: size and time


def _head_message() -> bytes:
    return f"Request line and headers are larger than {MAX_HEAD_SIZE} bytes\n".encode()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (2 * MAX_HEAD_SIZE) + b"\r\n\r\n",
            431,
            id="one-large-header",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: vvvvvvvvvvvvvvvvvvvvvv\r\n" * 60000,
            431,
            id="many-headers",
        ),
        pytest.param(
            b"GET /" + b"a" * (2 * MAX_HEAD_SIZE) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            id="long-request-target",
        ),
    ],
)
def test_oversized_head_rejected(server: Watchdog, request_head: bytes, status: int) -> None:
    runs = _runs(server)
    responses = _exchange(server, request_head)
    assert responses == [(status, _head_message())]
    assert _runs(server) == runs
    _assert_still_serving(server)


def test_head_below_limit_accepted(server: Watchdog) -> None:
    # 100 headers of 9 KiB: 900 KiB in all, each small enough for the environment.
    headers = b"".join(b"X-Part-%d: %s\r\n" % (number, b"v" * 9216) for number in range(100))
    responses = _exchange(
        server,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n"
        + headers
        + b"\r\nbody",
    )
    assert responses == [(200, b"body")]


def test_slow_head_cut_at_read_timeout(server: Watchdog) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 200 + b"\r\n"
    started = time.monotonic()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    received = b""
    try:
        for byte in head:
            try:
                connection.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - started > READ_TIMEOUT + 5:
                break
            time.sleep(0.01)  # the pace of a slow client, not a wait for the server
        connection.settimeout(5)
        while chunk := connection.recv(65536):
            received += chunk
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 ")
    assert received.endswith(b"Timed out reading the request headers: read_timeout is 1s\n")
    assert elapsed < READ_TIMEOUT + 1.0
    _assert_still_serving(server)


def test_idle_connection_closed_at_read_timeout(server: Watchdog) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        assert connection.recv(1) == b""
    assert READ_TIMEOUT - 0.1 <= time.monotonic() - started < READ_TIMEOUT + 1.0


def test_declared_body_over_limit_gets_413_before_start(server: Watchdog) -> None:
    runs = _runs(server)
    deadline = time.monotonic() + 5
    connection = Connection(server.port, deadline)
    try:
        # Only the head is sent, so the response must arrive before any byte of the 32 MiB body.
        connection.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n", deadline)
        response = connection.read_response(deadline)
    finally:
        connection.close()
    assert response.status == 413
    assert response.prefix == (
        f"Request body is larger than max_body_size ({MAX_BODY_SIZE} bytes)\n".encode()
    )
    assert _runs(server) == runs
    _assert_still_serving(server)


def test_chunked_body_over_limit_gets_413(server: Watchdog) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    responses = _exchange(
        server,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body,
    )
    assert [status for status, _ in responses] == [413]
    _assert_still_serving(server)


# Framing: chunked encoding, Content-Length, pipelining, HTTP/1.0

POST = b"POST / HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n", [[400]], id="chunk-size-not-hex"),
        pytest.param(
            CHUNKED + b"f" * 40 + b"\r\nabc\r\n0\r\n\r\n", [[400]], id="chunk-size-overflow"
        ),
        pytest.param(CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n", [[400]], id="negative-chunk-size"),
        pytest.param(CHUNKED + b"3\r\nabcX\r\n0\r\n\r\n", [[400]], id="chunk-longer-than-size"),
        pytest.param(
            CHUNKED + b"3;a=\x01\r\nabc\r\n0\r\n\r\n", [[400]], id="control-byte-in-extension"
        ),
        pytest.param(
            POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            [[400]],
            id="chunked-and-content-length",
        ),
        pytest.param(
            POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            [[400]],
            id="chunked-not-last",
        ),
        pytest.param(
            CHUNKED + b"3;name=value\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
            [[200]],
            id="extension-and-trailer",
        ),
        pytest.param(
            POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", [[400]], id="two-lengths"
        ),
        pytest.param(POST + b"Content-Length: abc\r\n\r\nabc", [[400]], id="length-not-a-number"),
        pytest.param(POST + b"Content-Length: -3\r\n\r\nabc", [[400]], id="negative-length"),
        pytest.param(
            POST + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n", [[400]], id="huge-length"
        ),
        pytest.param(
            POST + b"Content-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n",
            # The parser reaches the garbage before the first response is ready, so the server
            # sends 400 and closes the connection, or it sends both responses.
            [[400], [200, 400]],
            id="length-shorter-than-body",
        ),
        pytest.param(b"GARBAGE\r\n\r\n", [[400]], id="garbage-request-line"),
        pytest.param(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", [[400]], id="unknown-method"),
        pytest.param(POST + b"NoColon\r\n\r\n", [[400]], id="header-without-colon"),
        pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", [[400]], id="bare-line-feeds"),
        pytest.param(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", [[400]], id="unknown-version"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [[400]], id="http2-preface"),
        pytest.param(
            b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            [[400]],
            id="connect",
        ),
        pytest.param(
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            [[404], [405]],
            id="asterisk-target",
        ),
    ],
)
def test_malformed_request_gets_400(
    server: Watchdog, data: bytes, expected: list[list[int]]
) -> None:
    responses = _exchange(server, data)
    assert [status for status, _ in responses] in expected
    _assert_still_serving(server)


def test_body_shorter_than_length_gets_408(server: Watchdog) -> None:
    started = time.monotonic()
    responses = _exchange(server, POST + b"Content-Length: 10\r\n\r\nabc")
    assert responses[0] == (
        408,
        f"Timed out reading the request body: read_timeout is {READ_TIMEOUT:g}s\n".encode(),
    )
    assert time.monotonic() - started < READ_TIMEOUT + 2.5
    _assert_still_serving(server)


def test_truncated_request_then_close(server: Watchdog) -> None:
    for data in (b"POST / HT", POST + b"Content-Le", POST + b"Content-Length: 10\r\n\r\nabc"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(data)
    _assert_still_serving(server)


def test_pipelined_requests_answered_in_order(server: Watchdog) -> None:
    data = (
        POST + b"Content-Length: 1\r\n\r\na"
        + CHUNKED + b"2\r\nbb\r\n1\r\nb\r\n0\r\n\r\n"
        + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        + POST + b"Connection: close\r\nContent-Length: 4\r\n\r\ndddd"
    )  # fmt: skip
    responses = _exchange(server, data)
    assert responses == [(200, b"a"), (200, b"bbb"), (200, b""), (200, b"dddd")]


def test_http_1_0_answered_and_closed(server: Watchdog) -> None:
    for keep_alive in (b"", b"Connection: keep-alive\r\n"):
        started = time.monotonic()
        responses = _exchange(
            server, b"POST / HTTP/1.0\r\n" + keep_alive + b"Content-Length: 5\r\n\r\nhello"
        )
        assert responses == [(200, b"hello")]
        assert time.monotonic() - started < READ_TIMEOUT, "the connection was kept open"


# Configuration: each option with values outside its form

INVALID = "invalid"
# The kinds of hostile value, tried on every option.
VALUES = {
    "empty": "",
    "negative": "-1",
    "huge": "9" * 400,
    "non-numeric": "abc",
    "non-ascii": "ünï",
    "arabic-digits": "٣",
    "control": "a\nb",
}
# What each option makes of each kind: INVALID (exit 2 naming the variable) or the parsed value.
ACCEPTED: dict[str, dict[str, object]] = {
    "fprocess": {
        "negative": ("-1",),
        "huge": ("9" * 400,),
        "non-numeric": ("abc",),
        "non-ascii": ("ünï",),
        "arabic-digits": ("٣",),
        "control": ("a", "b"),
    },
    "max_inflight": {"huge": int("9" * 400)},
    "max_body_size": {"huge": int("9" * 400)},
    "content_type": {"empty": "", "negative": "-1", "huge": "9" * 400, "non-numeric": "abc"},
    "auth_token": {
        "negative": "-1",
        "huge": "9" * 400,
        "non-numeric": "abc",
        "non-ascii": "ünï",
        "arabic-digits": "٣",
    },
}


def _cases() -> Iterator[object]:
    for option in OPTIONS:
        for kind, value in VALUES.items():
            expected = ACCEPTED.get(option.name, {}).get(kind, INVALID)
            yield pytest.param(option.name, value, expected, id=f"{option.name}-{kind}")


@pytest.mark.parametrize(("name", "value", "expected"), list(_cases()))
def test_option_value_rejected_or_accepted(name: str, value: str, expected: object) -> None:
    environ = {"fprocess": "cat", name: value}
    if expected == INVALID:
        with pytest.raises(ConfigError) as raised:
            load_config(environ)
        message = str(raised.value)
        assert message.startswith(name) or message.startswith(f"{name}=")
        assert "\n" not in message
    else:
        assert getattr(load_config(environ), name) == expected


def test_token_not_in_message() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"fprocess": "cat", "auth_token": "secret with space"})
    assert "secret" not in str(raised.value)


def test_token_file_not_utf8(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config({"fprocess": "cat", "auth_token_file": str(token_file)})


def _check_config(environment: dict[str, str]) -> tuple[int, str]:
    # Not run_watchdog: the output may hold bytes that are not UTF-8, as the settings do.
    result = subprocess.run(
        [sys.executable, "-m", "watchdog", "--check-config"],
        env=environment,
        capture_output=True,
        timeout=20,
        check=False,
    )
    return result.returncode, result.stderr.decode("utf-8", "replace")


@pytest.mark.slow
def test_every_option_exits_2_on_invalid_value(tmp_path: Path) -> None:
    # Through the command line: one invalid value per option, and bytes that are not UTF-8
    # (which Python decodes to surrogates), accepted only as a command line.
    base = base_environment(tmp_path) | {"fprocess": "cat"}
    runs = {}
    for option in OPTIONS:
        invalid = "sh -c 'unbalanced" if option.name == "fprocess" else "bad\x01value"
        runs[(option.name, "invalid")] = base | {option.name: invalid}
        runs[(option.name, "not-utf8")] = base | {option.name: os.fsdecode(b"\xff")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(runs, pool.map(_check_config, runs.values()), strict=True))

    for (name, kind), (status, stderr) in results.items():
        assert "Traceback" not in stderr, (name, kind)
        if name == "fprocess" and kind == "not-utf8":
            assert status == 0, stderr
            continue
        assert status == 2, (name, kind, stderr)
        assert len(stderr.strip().splitlines()) == 1, (name, kind, stderr)
        assert f"fwatchdog: {name}" in stderr, (name, kind, stderr)


def test_huge_durations_still_serve(start_watchdog: Watchdog.Factory) -> None:
    huge = "9" * 30
    watchdog = start_watchdog(
        read_timeout=huge, write_timeout=huge, exec_timeout=huge, healthcheck_interval=huge
    )
    with watchdog.client() as client:
        response = client.post("/", content=b"still here")
    assert response.text == "still here"
