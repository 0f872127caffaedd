"""Request data passed to the function process: `Http_*` variables and the marshalled request.

Pure functions of the request's parts, so they are tested without a server or a process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping

__all__ = [
    "MAX_REQUEST_ENVIRONMENT",
    "MAX_VARIABLE_SIZE",
    "HeaderTooLarge",
    "canonical_header_name",
    "cgi_environment",
    "marshal_request",
]

# Linux limits one "NAME=value" string of a new process to 32 pages (MAX_ARG_STRLEN, 128 KiB).
MAX_VARIABLE_SIZE = 128 * 1024
# Linux also limits the strings and pointers of argv and envp together, to a quarter of the stack
# limit (2 MiB with the usual 8 MiB). The variables of one request may take half of that.
MAX_REQUEST_ENVIRONMENT = 1024 * 1024
_POINTER_SIZE = 8

# The variables that the watchdog itself sets: a header that maps to one of these is dropped, so
# a client cannot spoof the method, path or body length that the function sees.
RESERVED = frozenset(
    {
        b"Http_Method",
        b"Http_ContentLength",
        b"Http_Content_Length",
        b"Http_Transfer_Encoding",
        b"Http_Query",
        b"Http_Path",
        b"Http_Host",
    }
)

_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _is_token(name: bytes) -> bool:
    """Return True when every byte of `name` is in the HTTP token set."""
    return not name.translate(None, _TOKEN)


class HeaderTooLarge(ValueError):
    """A request header too large for one environment variable, or headers too large together.

    `header` is the name of the header, or None when only all of them together are too large.
    """

    def __init__(self, header: str | None) -> None:
        if header is None:
            message = (
                "Request headers are too large for the environment together: the limit is "
                f"{MAX_REQUEST_ENVIRONMENT // 1024} KiB"
            )
        else:
            message = (
                f"Request header {header!r} is too large for the environment: the limit is "
                f"{MAX_VARIABLE_SIZE // 1024} KiB"
            )
        super().__init__(message)
        self.header = header


def canonical_header_name(name: bytes) -> bytes:
    """Capitalise each dash-separated word (`content-type` to `Content-Type`), as Go does.

    A name with a byte outside the HTTP token set is returned unchanged, as Go's
    CanonicalMIMEHeaderKey does.
    """
    if not _is_token(name):
        return name
    return b"-".join(word[:1].upper() + word[1:].lower() for word in name.split(b"-"))


def cgi_environment(
    base: Mapping[bytes, bytes],
    *,
    method: str,
    path: str,
    query: bytes,
    host: bytes,
    headers: Iterable[tuple[bytes, bytes]],
) -> dict[bytes, bytes]:
    """Return `base` plus the `Http_*` variables for one request.

    Each header becomes `Http_<Canonical_Name>` with its first value, byte for byte: obs-text
    (0x80-0xFF) is not decoded and a tab stays a tab. A header whose name has a byte outside the
    HTTP token set, or whose value has a NUL, is left out: no conforming parser passes one on
    (httptools responds 400), and it could put '=' into a variable name or cut a string short;
    such a Host header leaves `Http_Host` empty. A NUL decoded from `%00` in the path, or found
    in the query, becomes `%00` again.

    Raises HeaderTooLarge when a header (Host included) does not fit in one environment
    variable, or when the request's variables together exceed MAX_REQUEST_ENVIRONMENT.
    """
    environment = dict(base)
    seen: set[bytes] = set()
    content_length: bytes | None = None
    transfer_encoding: bytes | None = None
    for name, value in headers:
        if not name or not _is_token(name) or b"\0" in value:
            continue
        if name == b"content-length":
            content_length = content_length or value
        elif name == b"transfer-encoding":
            transfer_encoding = transfer_encoding or value
        key = b"Http_" + canonical_header_name(name).replace(b"-", b"_")
        if key in RESERVED or key in seen:
            continue
        if len(key) + len(value) + 2 > MAX_VARIABLE_SIZE:
            raise HeaderTooLarge(name.decode("latin-1"))
        seen.add(key)
        environment[key] = value

    chunked = transfer_encoding is not None and b"chunked" in transfer_encoding.lower()
    if chunked:
        length = b"-1"
    else:
        length = content_length or b"0"
    environment[b"Http_Method"] = method.encode("ascii")
    environment[b"Http_ContentLength"] = length
    environment[b"Http_Content_Length"] = length
    if transfer_encoding is not None:
        environment[b"Http_Transfer_Encoding"] = transfer_encoding
    else:
        environment.pop(b"Http_Transfer_Encoding", None)
    if query:
        environment[b"Http_Query"] = query.replace(b"\0", b"%00")
    else:
        environment.pop(b"Http_Query", None)
    environment[b"Http_Path"] = path.encode("utf-8", "surrogateescape").replace(b"\0", b"%00")
    if len(b"Http_Host") + len(host) + 2 > MAX_VARIABLE_SIZE:
        raise HeaderTooLarge("host")
    environment[b"Http_Host"] = b"" if b"\0" in host else host
    size = sum(
        len(key) + len(value) + 2 + _POINTER_SIZE
        for key, value in environment.items()
        if key.startswith(b"Http_")
    )
    if size > MAX_REQUEST_ENVIRONMENT:
        raise HeaderTooLarge(None)
    return environment


def marshal_request(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Encode the request as `{"header": {...}, "body": {"raw": "<base64>"}}`.

    Header names are in canonical form and sorted, each with all its values; Host is left out.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        if name == b"host":
            continue
        key = canonical_header_name(name).decode("latin-1")
        grouped.setdefault(key, []).append(value.decode("latin-1"))
    document = {
        "header": dict(sorted(grouped.items())),
        "body": {"raw": base64.b64encode(body).decode("ascii")},
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
