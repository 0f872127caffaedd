"""Request handling of the real server: bodies, headers, status codes and the CGI environment."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.helpers import Watchdog


def test_echo_returns_body_and_headers(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        response = client.post("/", content=b"hello", headers={"Content-Type": "text/x-test"})
    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["content-type"] == "text/x-test"
    assert response.headers["x-duration-seconds"].count(".") == 1
    assert len(response.headers["x-duration-seconds"].split(".")[1]) == 6


def test_echo_binary_all_byte_values(start_watchdog: Watchdog.Factory) -> None:
    body = bytes(range(256)) * 16
    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        response = client.post("/", content=body)
    assert response.status_code == 200
    assert response.content == body


def test_echo_10_mib_round_trip(start_watchdog: Watchdog.Factory) -> None:
    body = os.urandom(10 * 1024 * 1024)
    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        response = client.post("/", content=body)
    assert response.status_code == 200
    assert len(response.content) == len(body)
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()


def test_chunked_body_is_streamed(start_watchdog: Watchdog.Factory) -> None:
    def chunks():  # a generator makes httpx send Transfer-Encoding: chunked
        for index in range(64):
            yield bytes([index]) * 65536

    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        response = client.post("/", content=chunks())
    assert response.status_code == 200
    assert response.content == b"".join(bytes([index]) * 65536 for index in range(64))


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "POST"])
def test_allowed_methods_run_function(start_watchdog: Watchdog.Factory, method: str) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'echo $Http_Method'")
    with watchdog.client() as client:
        response = client.request(method, "/any/path")
    assert response.status_code == 200
    assert response.text == f"{method}\n"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE"])
def test_other_methods_get_405(start_watchdog: Watchdog.Factory, method: str) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'echo ran > $TMPDIR/ran'")
    with watchdog.client() as client:
        response = client.request(method, "/")
    assert response.status_code == 405
    assert response.content == b""
    assert response.headers["allow"] == "DELETE, GET, PATCH, POST, PUT"
    assert not (watchdog.tmpdir / "ran").exists()


def test_fprocess_quotes_are_honoured(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="""sh -c 'echo "a  b"'""")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.text == "a  b\n"


def test_process_that_ignores_stdin_succeeds(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="echo ignored")
    with watchdog.client() as client:
        response = client.post("/", content=os.urandom(4 * 1024 * 1024))
    assert response.status_code == 200
    assert response.text == "ignored\n"


def test_nonzero_exit_gives_500_with_status_and_output(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(fprocess=f"{functions / 'fail.sh'} 3")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 500
    lines = response.text.splitlines()
    assert lines[0] == "exit status 3"
    assert sorted(lines[1:]) == ["to stderr", "to stdout"]


def test_missing_program_gives_500_naming_it(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="/nonexistent/handler --flag")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 500
    assert "/nonexistent/handler" in response.text
    assert "No such file or directory" in response.text


def test_program_not_executable_gives_500(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    script = tmp_path / "handler.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    watchdog = start_watchdog(fprocess=str(script))
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 500
    assert "Permission denied" in response.text


def test_combine_output_false_logs_stderr(
    start_watchdog: Watchdog.Factory, functions: Path
) -> None:
    watchdog = start_watchdog(fprocess=f"{functions / 'fail.sh'} 0", combine_output="false")
    with watchdog.client() as client:
        response = client.post("/")
    assert response.status_code == 200
    assert response.text == "to stdout\n"
    watchdog.wait_log("to stderr")


def test_content_type_setting_overrides_request(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat", content_type="application/json")
    with watchdog.client() as client:
        response = client.post("/", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.headers["content-type"] == "application/json"


def test_no_content_type_when_request_has_none(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat")
    with watchdog.client() as client:
        response = client.post("/", content=b"x")
    assert "content-type" not in response.headers


def _environment(response: httpx.Response) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in response.text.splitlines() if "=" in line)
    return dict(pairs)


def test_cgi_headers_become_environment(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env")
    with watchdog.client() as client:
        response = client.post(
            "/some%20path/x?a=1&b=two",
            content=b"12345",
            headers={"X-Custom-Header": "first", "content-type": "text/plain"},
        )
    variables = _environment(response)
    assert variables["Http_X_Custom_Header"] == "first"
    assert variables["Http_Content_Type"] == "text/plain"
    assert variables["Http_Method"] == "POST"
    assert variables["Http_ContentLength"] == "5"
    assert variables["Http_Content_Length"] == "5"
    assert variables["Http_Query"] == "a=1&b=two"
    assert variables["Http_Path"] == "/some path/x"
    assert variables["Http_Host"] == f"127.0.0.1:{watchdog.port}"
    assert "Http_Transfer_Encoding" not in variables
    assert variables["TMPDIR"] == str(watchdog.tmpdir)


def test_cgi_chunked_body_has_length_minus_one(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env")
    with watchdog.client() as client:
        response = client.post("/", content=iter([b"a", b"b"]))
    variables = _environment(response)
    assert variables["Http_ContentLength"] == "-1"
    assert variables["Http_Content_Length"] == "-1"
    assert variables["Http_Transfer_Encoding"] == "chunked"
    assert "Http_Query" not in variables


def test_cgi_headers_cannot_spoof_reserved(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env")
    spoofed = {"Method": "DELETE", "Path": "/admin", "Query": "x=1", "Contentlength": "7"}
    with watchdog.client() as client:
        response = client.post("/real", content=b"abc", headers=spoofed)
    variables = _environment(response)
    assert variables["Http_Method"] == "POST"
    assert variables["Http_Path"] == "/real"
    assert "Http_Query" not in variables
    assert variables["Http_ContentLength"] == "3"


def test_cgi_repeated_header_takes_first_value(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env")
    with watchdog.client() as client:
        response = client.post("/", headers=[("X-Twice", "one"), ("X-Twice", "two")])
    assert _environment(response)["Http_X_Twice"] == "one"


def test_cgi_headers_off_passes_none(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env", cgi_headers="false")
    with watchdog.client() as client:
        response = client.post("/", headers={"X-Custom": "1"})
    assert not [name for name in _environment(response) if name.startswith("Http_")]


def test_header_too_large_for_environment_gets_431(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'echo ran > $TMPDIR/ran'")
    with watchdog.client() as client:
        response = client.post("/", headers={"X-Big": "v" * (130 * 1024)})
    assert response.status_code == 431
    assert "x-big" in response.text.lower()
    assert not (watchdog.tmpdir / "ran").exists()


def test_marshal_request_sends_json_document(start_watchdog: Watchdog.Factory) -> None:
    body = bytes(range(256))
    watchdog = start_watchdog(fprocess="cat", marshal_request="true")
    with watchdog.client() as client:
        response = client.post(
            "/", content=body, headers=[("X-B", "2"), ("X-A", "1"), ("X-A", "3")]
        )
    document = json.loads(response.content)
    assert base64.b64decode(document["body"]["raw"]) == body
    assert document["header"]["X-A"] == ["1", "3"]
    assert document["header"]["X-B"] == ["2"]
    assert "Host" not in document["header"]
    assert list(document["header"]) == sorted(document["header"])


def test_write_debug_logs_output_with_cap(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="cat", write_debug="true")
    with watchdog.client() as client:
        response = client.post("/debug?x=1", content=b"z" * 5000)
    assert response.status_code == 200
    watchdog.wait_log("904 more bytes not logged")
    assert "'/debug'" in watchdog.log()


def test_max_body_size_rejects_before_forking(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="sh -c 'cat; echo ran > $TMPDIR/ran'", max_body_size="1KiB")
    with watchdog.client() as client:
        declared = client.post("/", content=b"x" * 2048)
        chunked = client.post("/", content=iter([b"x" * 1000, b"x" * 1000]))
        small = client.post("/", content=b"x" * 10)
    assert declared.status_code == 413
    assert "max_body_size" in declared.text
    assert chunked.status_code == 413
    assert small.status_code == 200
