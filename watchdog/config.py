"""Every option of the watchdog, declared once, and the parser that reads them from the environment.

Each option is read from its lower-case name (`exec_timeout`) or, failing that, from the same name
in upper case behind a `WATCHDOG_` prefix (`WATCHDOG_EXEC_TIMEOUT`),
the form OSCAR sets on its pods.
The parser has no side effects: it reads a mapping and returns a frozen `Config`, or raises
`ConfigError` naming the variable, its value and the accepted form.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OPTIONS", "Config", "ConfigError", "Option", "load_config", "parse_duration"]

ENV_PREFIX = "WATCHDOG_"
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# Each worker is a whole interpreter of about 25 MiB, so the count is kept to what a pod can use.
MAX_WORKERS = 64


class ConfigError(ValueError):
    """An environment variable that is missing or has a value outside its accepted form."""


# Go's time.ParseDuration units, in seconds.
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)


def parse_duration(text: str) -> float:
    """Convert `5` (whole seconds) or a Go duration such as `500ms` or `1m30s` to seconds.

    Raises ValueError for anything else, negative values included.
    """
    text = text.strip()
    if text.isascii() and text.isdigit():
        try:
            return float(int(text))
        except OverflowError:
            raise ValueError(f"duration {text!r} is too large") from None
    if not text:
        raise ValueError("empty duration")
    position = 0
    seconds = 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is too large")
    return seconds


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(text)


def _parse_count(text: str) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()):
        raise ValueError(text)
    return int(stripped)


def _parse_port(text: str) -> int:
    port = _parse_count(text)
    if port > 65535:
        raise ValueError(text)
    return port


def _parse_workers(text: str) -> int:
    count = _parse_count(text)
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(text)
    return count


def _parse_size(text: str) -> int:
    """Convert `1048576`, `512KiB`, `64MiB` or `1GiB` to bytes."""
    match = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?", text.strip(), re.ASCII)
    if match is None:
        raise ValueError(text)
    factors = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    factors |= {"KB": 1000, "MB": 1000**2, "GB": 1000**3}
    return int(match.group(1)) * factors[match.group(2)]


def _parse_command(text: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(text))
    if not argv:
        raise ValueError(text)
    return argv


def _parse_text(text: str) -> str:
    return text


def _parse_media_type(text: str) -> str:
    # uvicorn fails every response with a control character in a header value. Non-ASCII text
    # has no place in a media type either.
    if any(not (" " <= character <= "~" or character == "\t") for character in text):
        raise ValueError(text)
    return text


def _choice(*names: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in names:
            raise ValueError(text)
        return lowered

    return parse


def _parse_log_level(text: str) -> str:
    upper = text.strip().upper()
    if upper == "WARN":
        return "WARNING"
    if upper not in LOG_LEVELS:
        raise ValueError(text)
    return upper


@dataclasses.dataclass(frozen=True)
class Option:
    """The declaration of one environment variable: the parser, `--help` and the README use it."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    accepted: str
    help: str
    unit: str = ""
    required: bool = False
    secret: bool = False
    # Extra variable names, read after the two standard ones, such as LOG_LEVEL set by OSCAR.
    aliases: tuple[str, ...] = ()

    @property
    def alias(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_text(self) -> str:
        """Describe the default as documented: `required`, `unset`, `30s`, `true`."""
        if self.required:
            return "required"
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if self.unit == "seconds":
            return f"{self.default:g}s"
        return str(self.default)


_DURATION = "whole seconds (5) or a Go duration (500ms, 1m30s, 2h)"
_BOOL = "true, false, 1, 0, yes or no"

OPTIONS: tuple[Option, ...] = (
    Option(
        "fprocess",
        _parse_command,
        None,
        "a command line such as 'python3 handler.py'",
        "Command run for every request, split as a POSIX shell would; no shell is started.",
        required=True,
    ),
    Option(
        "port",
        _parse_port,
        8080,
        "a port number from 0 to 65535",
        "Port of the function listener, on all interfaces.",
    ),
    Option(
        "read_timeout",
        parse_duration,
        30.0,
        _DURATION,
        "Time allowed to receive the request headers, then the whole body, and for which an "
        "idle connection stays open; 0 means no limit.",
        unit="seconds",
    ),
    Option(
        "write_timeout",
        parse_duration,
        30.0,
        _DURATION,
        "Time from the end of the request headers until the response is sent; 0 means no limit.",
        unit="seconds",
    ),
    Option(
        "exec_timeout",
        parse_duration,
        0.0,
        _DURATION,
        "Hard limit on the run time of the function process; 0 turns it off.",
        unit="seconds",
    ),
    Option(
        "healthcheck_interval",
        parse_duration,
        None,
        _DURATION,
        "Time between SIGTERM and closing the listener, while health answers 503; unset "
        "means write_timeout.",
        unit="seconds",
    ),
    Option(
        "max_inflight",
        _parse_count,
        0,
        "a whole number, 0 for no limit",
        "Maximum concurrent function requests; the rest get 429 at once.",
    ),
    Option(
        "workers",
        _parse_workers,
        1,
        "a whole number from 1 to 64",
        "Processes that serve requests on the same port, each with its own event loop. More "
        "than 1 lets the HTTP work use more cores; max_inflight holds across them.",
    ),
    Option(
        "max_body_size",
        _parse_size,
        0,
        "bytes, optionally with KiB, MiB or GiB; 0 for none",
        "Largest request body accepted; larger bodies get 413 before the function starts.",
        unit="bytes",
    ),
    Option(
        "cgi_headers",
        _parse_bool,
        True,
        _BOOL,
        "Expose request data to the process as Http_* environment variables.",
    ),
    Option(
        "marshal_request",
        _parse_bool,
        False,
        _BOOL,
        "Pipe a JSON document with the headers and the base64 body instead of the raw body.",
    ),
    Option(
        "combine_output",
        _parse_bool,
        True,
        _BOOL,
        "Send stderr with stdout in the response; when false, stderr goes to the log.",
    ),
    Option(
        "content_type",
        _parse_media_type,
        None,
        "any media type, such as application/json",
        "Fixed Content-Type of responses; unset mirrors the request's Content-Type.",
    ),
    Option(
        "write_debug",
        _parse_bool,
        False,
        _BOOL,
        "Log the query, path and output of each request, cut at 4 KiB.",
    ),
    Option(
        "debug_headers", _parse_bool, False, _BOOL, "Log the headers of each request and response."
    ),
    Option(
        "suppress_lock",
        _parse_bool,
        False,
        _BOOL,
        "Do not write the lock file $TMPDIR/.lock; health then depends on shutdown only.",
    ),
    Option(
        "metrics_port",
        _parse_port,
        8081,
        "a port number from 0 to 65535",
        "Port of the Prometheus metrics listener.",
    ),
    Option(
        "io_mode",
        _choice("raw", "oscar"),
        "raw",
        "raw or oscar",
        "raw pipes the body to stdin; oscar writes it to $INPUT_FILE_PATH and returns the "
        "files the process writes.",
    ),
    Option(
        "auth_token",
        _parse_text,
        None,
        "a token, or env:NAME to read the variable NAME",
        "Bearer token that every function request must carry.",
        secret=True,
    ),
    Option(
        "auth_token_file",
        _parse_text,
        None,
        "a path to a file that contains the token",
        "File read once at start-up for the bearer token.",
    ),
    Option(
        "log_level",
        _parse_log_level,
        "INFO",
        "DEBUG, INFO, WARNING, ERROR or CRITICAL",
        "Verbosity of the watchdog's log; also read from LOG_LEVEL, as OSCAR sets it.",
        aliases=("LOG_LEVEL",),
    ),
    Option(
        "log_format",
        _choice("text", "json"),
        "text",
        "text or json",
        "Log line format; json writes one object per line.",
    ),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective settings, one attribute per option of the same name."""

    fprocess: tuple[str, ...]
    port: int = 8080
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    exec_timeout: float = 0.0
    healthcheck_interval: float | None = None
    max_inflight: int = 0
    workers: int = 1
    max_body_size: int = 0
    cgi_headers: bool = True
    marshal_request: bool = False
    combine_output: bool = True
    content_type: str | None = None
    write_debug: bool = False
    debug_headers: bool = False
    suppress_lock: bool = False
    metrics_port: int = 8081
    io_mode: str = "raw"
    auth_token: str | None = dataclasses.field(default=None, repr=False)
    auth_token_file: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def shutdown_interval(self) -> float:
        """Seconds between SIGTERM and closing the listener."""
        if self.healthcheck_interval is None:
            return self.write_timeout
        return self.healthcheck_interval

    def describe(self) -> dict[str, str]:
        """Map each option to its effective value as text, with secrets masked."""
        described = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.secret and value is not None:
                described[option.name] = "****"
            elif isinstance(value, tuple):
                described[option.name] = shlex.join(value)
            elif option.unit == "seconds" and value is not None:
                described[option.name] = f"{value:g}s"
            elif isinstance(value, bool):
                described[option.name] = str(value).lower()
            else:
                described[option.name] = "" if value is None else str(value)
        return described


def _lookup(environ: Mapping[str, str], option: Option) -> tuple[str, str] | None:
    for name in (option.name, option.alias, *option.aliases):
        if name in environ:
            return name, environ[name]
    return None


def _read_token(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    token = values.get("auth_token")
    if token is not None and token.startswith("env:"):
        variable = token[len("env:") :]
        if not environ.get(variable):
            raise ConfigError(
                f"auth_token refers to the environment variable {variable!r}, which is missing "
                "or empty: set it, or give the token itself"
            )
        values["auth_token"] = environ[variable]
    path = values.get("auth_token_file")
    if path is not None and token is None:
        try:
            with open(path, encoding="utf-8") as file:
                values["auth_token"] = file.read().strip()
        except OSError as error:
            raise ConfigError(
                f"auth_token_file={path!r} could not be read ({error.strerror}): give the path "
                "to a readable file that contains the token"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"auth_token_file={path!r} is not UTF-8 text: write the token into it as text"
            ) from None
        if not values["auth_token"]:
            raise ConfigError(f"auth_token_file={path!r} is empty: write the token into it")
    token = values.get("auth_token")
    if token == "":
        raise ConfigError("auth_token is set but empty: give the token, or unset the variable")
    unusable = [c for c in token or "" if not c.isprintable() or c.isspace()]
    if unusable:
        # The message leaves the token out: it is a secret.
        raise ConfigError(
            "auth_token has a space, a control character or bytes that are not UTF-8, which no "
            "Authorization header can carry: give a token of printable characters"
        )


def load_config(environ: Mapping[str, str]) -> Config:
    """Parse the options from `environ` into a Config.

    Raises ConfigError with a one-line message for a missing required option or an invalid value.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS:
        found = _lookup(environ, option)
        if found is None:
            if option.required:
                raise ConfigError(
                    f"{option.name} is missing: set it to {option.accepted} (or set {option.alias})"
                )
            continue
        name, text = found
        try:
            values[option.name] = option.parse(text)
        except ValueError:
            raise ConfigError(
                f"{name} has the invalid value {text!r}: expected {option.accepted}"
            ) from None
    _read_token(values, environ)
    if values.get("marshal_request") and values.get("io_mode") == "oscar":
        raise ConfigError(
            "marshal_request=true has no effect with io_mode=oscar, which gives the process no "
            "stdin: unset one of them"
        )
    return Config(**values)
