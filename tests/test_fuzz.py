"""Property-based tests of the request header to `Http_*` environment mapping, and one end-to-end
run of unusual headers through the real server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Watchdog, read_response
from watchdog.environ import (
    MAX_REQUEST_ENVIRONMENT,
    MAX_VARIABLE_SIZE,
    RESERVED,
    HeaderTooLarge,
    canonical_header_name,
    cgi_environment,
)

FUNCTIONS = Path(__file__).parent / "functions"

# What httptools accepts (checked against the real server in test_parser_accepts_alphabets):
# names are tokens, and values are tab, visible ASCII, space and obs-text (0x80-0xFF). uvicorn
# lowercases names and strips the whitespace around values.
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
BASE = {b"PATH": b"/usr/bin:/bin", b"HOME": b"/root", b"Http_Preset": b"from the image"}

names = st.lists(st.sampled_from(TOKEN), min_size=1, max_size=24).map(bytes).map(bytes.lower)
values = (
    st.lists(st.sampled_from(VALUE_BYTES), max_size=64)
    .map(bytes)
    .map(lambda value: value.strip(b" \t"))
)
parser_headers = st.lists(st.tuples(names, values), max_size=24)
# Values up to and just past the size limit of one variable, where HeaderTooLarge begins.
long_values = st.integers(0, MAX_VARIABLE_SIZE).map(lambda size: b"v" * size)
reserved_names = st.sampled_from(
    [b"method", b"path", b"query", b"host", b"contentlength", b"content-length",
     b"content_length", b"transfer-encoding", b"transfer_encoding", b"content-type"]
)  # fmt: skip


def _environment(headers: list[tuple[bytes, bytes]], **request: object) -> dict[bytes, bytes]:
    arguments: dict[str, object] = {
        "method": "POST",
        "path": "/function/path",
        "query": b"a=1",
        "host": b"example.test:8080",
    }
    arguments.update(request)
    return cgi_environment(BASE, headers=headers, **arguments)  # type: ignore[arg-type]


def _check_valid(environment: dict[bytes, bytes]) -> None:
    request_size = 0
    for name, value in environment.items():
        assert name, "empty variable name"
        assert b"=" not in name, name
        assert b"\0" not in name, name
        assert b"\0" not in value, name
        if name.startswith(b"Http_"):
            assert len(name) + len(value) + 2 <= MAX_VARIABLE_SIZE, name
            request_size += len(name) + len(value) + 2 + 8
    assert request_size <= MAX_REQUEST_ENVIRONMENT


@given(parser_headers)
@settings(max_examples=300)
def test_parsed_headers_give_valid_environment(headers: list[tuple[bytes, bytes]]) -> None:
    environment = _environment(headers)
    _check_valid(environment)
    for name, value in BASE.items():
        if not name.startswith(b"Http_"):
            assert environment[name] == value


def _variable(name: bytes) -> bytes:
    return b"Http_" + canonical_header_name(name).replace(b"-", b"_")


def _variable_size(name: bytes, value: bytes) -> int:
    return len(name) + len(value) + 2 + 8  # NAME=value, its NUL and its pointer in envp


@given(st.lists(st.tuples(names, long_values), min_size=1, max_size=12))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_too_large_headers_give_431(headers: list[tuple[bytes, bytes]]) -> None:
    first: dict[bytes, tuple[bytes, bytes]] = {}
    for name, value in headers:
        if _variable(name) not in RESERVED:
            first.setdefault(_variable(name), (name, value))
    oversized = [
        name
        for key, (name, value) in first.items()
        if len(key) + len(value) + 2 > MAX_VARIABLE_SIZE
    ]
    fixed = sum(
        _variable_size(key, value)
        for key, value in _environment([]).items()
        if key.startswith(b"Http_")
    )
    total = fixed + sum(_variable_size(key, value) for key, (_, value) in first.items())
    if oversized:
        with pytest.raises(HeaderTooLarge) as raised:
            _environment(headers)
        assert raised.value.header == oversized[0].decode("latin-1")
    elif total > MAX_REQUEST_ENVIRONMENT:
        with pytest.raises(HeaderTooLarge) as raised:
            _environment(headers)
        assert raised.value.header is None
    else:
        _check_valid(_environment(headers))


@given(parser_headers)
@settings(max_examples=300)
def test_each_header_maps_to_first_value(headers: list[tuple[bytes, bytes]]) -> None:
    environment = _environment(headers)
    first: dict[bytes, bytes] = {}
    for name, value in headers:
        first.setdefault(b"Http_" + canonical_header_name(name).replace(b"-", b"_"), value)
    for key, value in first.items():
        if key not in RESERVED:
            assert environment[key] == value, key


@given(st.lists(st.tuples(reserved_names, values), max_size=12), parser_headers)
@settings(max_examples=300)
def test_reserved_variables_never_overwritten(
    spoofed: list[tuple[bytes, bytes]], others: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (name, value)
        for name, value in spoofed + others
        if name not in (b"content-length", b"transfer-encoding")
    ]
    environment = _environment(headers, method="PATCH", path="/real", query=b"")
    assert environment[b"Http_Method"] == b"PATCH"
    assert environment[b"Http_Path"] == b"/real"
    assert environment[b"Http_Host"] == b"example.test:8080"
    assert environment[b"Http_ContentLength"] == b"0"
    assert environment[b"Http_Content_Length"] == b"0"
    assert b"Http_Query" not in environment
    assert b"Http_Transfer_Encoding" not in environment


@given(st.lists(st.tuples(st.binary(max_size=24), st.binary(max_size=64)), max_size=24))
@settings(max_examples=500)
def test_any_bytes_give_valid_environment_or_431(headers: list[tuple[bytes, bytes]]) -> None:
    # Bytes that no HTTP parser passes on: names outside the token set, values with NUL or
    # other control bytes. Such names and NUL values are left out; other values pass unchanged.
    try:
        environment = _environment(headers)
    except HeaderTooLarge:
        return
    _check_valid(environment)
    expected = {b"Http_Preset": BASE[b"Http_Preset"]}
    first: dict[bytes, bytes] = {}
    for name, value in headers:
        if name and all(byte in TOKEN for byte in name) and b"\0" not in value:
            first.setdefault(b"Http_" + canonical_header_name(name).replace(b"-", b"_"), value)
    expected.update({key: value for key, value in first.items() if key not in RESERVED})
    produced = {
        key: value
        for key, value in environment.items()
        if key.startswith(b"Http_") and key not in RESERVED
    }
    assert produced == expected


@given(st.text(max_size=64), st.binary(max_size=64))
def test_nul_in_path_and_query_is_escaped(path: str, query: bytes) -> None:
    environment = _environment([], path="/" + path, query=query)
    _check_valid(environment)
    expected_path = ("/" + path).encode("utf-8", "surrogateescape").replace(b"\0", b"%00")
    assert environment[b"Http_Path"] == expected_path
    if query:
        assert environment[b"Http_Query"] == query.replace(b"\0", b"%00")


def test_obs_text_and_tab_pass_byte_for_byte() -> None:
    value = b"caf\xc3\xa9 \xff\x80\tend"
    environment = _environment([(b"x-raw", value)])
    assert environment[b"Http_X_Raw"] == value


def test_host_too_large_gives_431() -> None:
    with pytest.raises(HeaderTooLarge) as raised:
        _environment([], host=b"h" * MAX_VARIABLE_SIZE)
    assert raised.value.header == "host"


def test_headers_too_large_together_give_431() -> None:
    headers = [(b"x-%d" % number, b"v" * 1000) for number in range(1100)]
    with pytest.raises(HeaderTooLarge) as raised:
        _environment(headers)
    assert raised.value.header is None
    assert str(raised.value).startswith("Request headers are too large for the environment")


# End to end


def _raw_request(port: int, head: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        return read_response(connection)


def test_unusual_headers_reach_function(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess=f"python3 {FUNCTIONS / 'print_environment.py'}")
    head, body = _raw_request(
        watchdog.port,
        b"GET /a%00b/caf%C3%A9?q=%00&r=1 HTTP/1.1\r\n"
        b"Host: example.test\r\n"
        b"X-Obs: caf\xc3\xa9 \xff\r\n"
        b"X-Tab: a\tb\r\n"
        b"X!#$%&'*+.^_`|~: token\r\n"
        b"x-UPPER-lower: mixed\r\n"
        b"X-Twice: first\r\n"
        b"x-twice: second\r\n"
        b"Method: DELETE\r\n"
        b"Path: /spoofed\r\n"
        b"Http-Method: nested\r\n"
        b"X-Empty:\r\n"
        b"\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200")
    variables = {name: value.encode("latin-1") for name, value in json.loads(body).items()}
    assert variables["Http_Path"] == "/a%00b/café".encode()
    assert variables["Http_Query"] == b"q=%00&r=1"
    assert variables["Http_Host"] == b"example.test"
    assert variables["Http_Method"] == b"GET"
    assert variables["Http_X_Obs"] == b"caf\xc3\xa9 \xff"
    assert variables["Http_X_Tab"] == b"a\tb"
    assert variables["Http_X!#$%&'*+.^_`|~"] == b"token"
    assert variables["Http_X_Upper_Lower"] == b"mixed"
    assert variables["Http_X_Twice"] == b"first"
    assert variables["Http_Http_Method"] == b"nested"
    assert variables["Http_X_Empty"] == b""
    assert "Http_Path_" not in variables


def test_parser_accepts_alphabets(start_watchdog: Watchdog.Factory) -> None:
    # The alphabets of the strategies above are what the server accepts, and nothing more.
    watchdog = start_watchdog(fprocess="echo ran")

    def status(header_line: bytes) -> bytes:
        head, _ = _raw_request(watchdog.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + header_line)
        return head.split(b" ")[1]

    assert status(b"X-Value: " + VALUE_BYTES.strip(b" \t") + b"\r\n\r\n") == b"200"
    assert status(TOKEN + b": v\r\n\r\n") == b"200"
    for byte in sorted(set(range(0x20)) - {0x09, 0x0A, 0x0D} | {0x7F}):
        assert status(b"X-Value: a" + bytes([byte]) + b"b\r\n\r\n") == b"400", byte
    for byte in sorted(set(range(0x21, 0x100)) - set(TOKEN) - {ord(":")}):
        assert status(b"X" + bytes([byte]) + b"Y: v\r\n\r\n") == b"400", byte
