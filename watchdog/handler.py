"""The function request handler: one request in, one process run, one response out.

How each outcome reaches the client:

    method not in ALLOWED_METHODS          405, empty body, Allow header; no process
    missing or wrong bearer token          401, WWW-Authenticate: Bearer; no process
    max_inflight slots all taken           429 "Concurrent request limit exceeded. ..."
    body larger than max_body_size         413; the process is killed if it had started
    body the I/O mode cannot use           400 with the reason; no process
    header too large for the environment   431 naming the header; no process
    process cannot start                   500 naming the command and the OS error,
                                           503 when the machine is out of descriptors or processes
    body not received within read_timeout  408; the process is killed
    exec_timeout reached                   408 "Killed process."; the process group is killed
    write_timeout reached                  504 naming write_timeout; the process group is killed
    output cannot be stored (disk full)    507; the process group is killed
    process exits non-zero                 500 "exit status N" followed by its output
    client disconnects                     no response; the process group is killed
    drain after SIGTERM ran out            503; the process group is killed
    process exits 0                        200 with its output
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Mapping

from starlette.types import Message, Receive, Scope, Send

from . import environ
from .body import BodyTimeout, BodyTooLarge, ClientDisconnect, RequestBody
from .config import OPTIONS, Config
from .iomodes import BadRequest, Exchange, IOMode
from .lifecycle import Lifecycle, ShuttingDown
from .limiter import Limiter, SharedLimiter
from .logs import RepeatedWarning
from .output import Output
from .process import Completed, OutputError, ProcessRunner, SpawnError
from .responses import StderrLog, send_output, send_response

__all__ = ["ALLOWED_METHODS", "FunctionHandler"]

logger = logging.getLogger("watchdog")
access_logger = logging.getLogger("watchdog.access")

ALLOWED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "GET"})
DEBUG_LOG_LIMIT = 4096
Headers = list[tuple[bytes, bytes]]

_ALLOW = ", ".join(sorted(ALLOWED_METHODS)).encode()
_TEXT: Headers = [(b"content-type", b"text/plain; charset=utf-8")]
# nginx's code for a request that the client closed; only the access log shows it.
_CLIENT_LEFT = 499


class WriteTimeout(Exception):
    """The response was not ready within write_timeout."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


class FunctionHandler:
    """Run the function for every request on every path but health; `handle` is the endpoint."""

    def __init__(
        self,
        config: Config,
        runner: ProcessRunner,
        limiter: Limiter | SharedLimiter,
        lifecycle: Lifecycle,
        io_mode: IOMode,
        base_environment: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.limiter = limiter
        self.lifecycle = lifecycle
        self.io_mode = io_mode
        inherited = os.environb if base_environment is None else base_environment
        # The watchdog's own secrets (auth_token) are not handed to every function process.
        secrets = {name.encode() for option in OPTIONS if option.secret
                   for name in (option.name, option.alias, *option.aliases)}  # fmt: skip
        self.base_environment = {
            name: value for name, value in inherited.items() if name not in secrets
        }
        self._too_busy = (
            f"Concurrent request limit exceeded. Max concurrent requests: {config.max_inflight}\n"
        ).encode()
        self._token = config.auth_token.encode() if config.auth_token else None
        self._rejections = RepeatedWarning(logger)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one request; return the status sent, or 0 when the client left before it."""
        started = time.monotonic()
        counting = _CountingSend(send)
        status = await self._dispatch(scope, receive, counting, started)
        if status == 429:
            return status  # counted in the rejection warning: a flood of them would flood the log
        access_logger.info(
            "%s %s %s %.6fs %d bytes",
            scope["method"], scope["path"], status, time.monotonic() - started, counting.sent,
        )  # fmt: skip
        return 0 if status == _CLIENT_LEFT else status

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, started: float) -> int:
        if scope["method"] not in ALLOWED_METHODS:
            await send_response(send, 405, b"", [(b"allow", _ALLOW)])
            return 405
        if self._token is not None and not self._authorized(scope["headers"]):
            logger.warning("Rejected %s %s: missing or wrong bearer token", *_request(scope))
            await send_response(
                send, 401, b"Unauthorized: a valid bearer token is required\n",
                [*_TEXT, (b"www-authenticate", b"Bearer")],
            )  # fmt: skip
            return 401
        if not self.limiter.try_acquire():
            self._rejections.warning(
                "Rejected %s %s: max_inflight (%d) requests already in flight",
                *_request(scope), self.limiter.maximum,
            )  # fmt: skip
            await send_response(
                send,
                429,
                self._too_busy,
                [(b"content-type", b"text/plain"), (b"retry-after", b"1")],
            )
            return 429
        try:
            with self.lifecycle.track_request() as drained:
                return await self._serve(scope, receive, send, started, drained)
        finally:
            self.limiter.release()

    def _authorized(self, headers: Headers) -> bool:
        value = _header(headers, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer" or self._token is None:
            return False
        return hmac.compare_digest(token.strip(), self._token)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        drained: asyncio.Future[None],
    ) -> int:
        config = self.config
        headers: Headers = scope["headers"]
        if config.debug_headers:
            logger.info("Request headers of %s %s: %s", *_request(scope), _show_headers(headers))
        output = Output()
        exchange: Exchange | None = None
        try:
            _check_declared_size(headers, config.max_body_size)
            environment = self._environment(scope, headers)
            body = RequestBody(receive, config.read_timeout, config.max_body_size)
            exchange = await self.io_mode.open(body, headers)
            environment.update(exchange.environment)
            completed = await self._run(
                scope, body, exchange, environment, output, started, drained
            )
            return await self._respond(scope, send, headers, completed, exchange, output, started)
        except ClientDisconnect:
            logger.warning("Client disconnected from %s %s; process killed", *_request(scope))
            return _CLIENT_LEFT
        except Exception as error:
            failure = _failure(error, config)
            if failure is None:
                raise
            status, reason = failure
            if status >= 500 and status != 503:
                logger.error("%s %s failed: %s", *_request(scope), reason)
            else:
                logger.warning("Rejected %s %s with %s: %s", *_request(scope), status, reason)
            await send_response(send, status, (reason + "\n").encode(), _TEXT)
            return status
        finally:
            output.close()
            if exchange is not None:
                exchange.close()

    async def _run(
        self,
        scope: Scope,
        body: RequestBody,
        exchange: Exchange,
        environment: dict[bytes, bytes],
        output: Output,
        started: float,
        drained: asyncio.Future[None],
    ) -> Completed:
        """Run the process in this task; a disconnect, write_timeout or the drain's end stops it.

        Each of the three cancels this task, which kills the process group, and the first one
        is raised instead of the CancelledError. No task of its own for the run, and no
        asyncio.wait, keeps the cost per request down.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("FunctionHandler must run in a task")
        reasons: list[Exception] = []
        running = True

        def stop(reason: Exception) -> None:
            if running and not reasons:
                reasons.append(reason)
                task.cancel()

        def on_disconnect(watcher: asyncio.Future[None]) -> None:
            if not watcher.cancelled():
                stop(ClientDisconnect())

        def on_drained(future: asyncio.Future[None]) -> None:
            stop(ShuttingDown())

        stderr_log = None if self.config.combine_output else StderrLog(scope)
        disconnect = asyncio.ensure_future(body.wait_disconnect())
        disconnect.add_done_callback(on_disconnect)
        drained.add_done_callback(on_drained)
        timer = None
        if self.config.write_timeout:
            remaining = max(self.config.write_timeout - (time.monotonic() - started), 0)
            timer = asyncio.get_running_loop().call_later(remaining, stop, WriteTimeout())
        try:
            return await self.runner.run(
                environment, exchange.stdin, output, stderr_log.write if stderr_log else None
            )
        except asyncio.CancelledError:
            if not reasons:
                raise  # cancelled from outside, such as by the server
            task.uncancel()
            raise reasons[0] from None
        finally:
            running = False
            disconnect.cancel()
            drained.remove_done_callback(on_drained)
            if timer is not None:
                timer.cancel()
            if stderr_log is not None:
                stderr_log.flush()

    async def _respond(
        self,
        scope: Scope,
        send: Send,
        headers: Headers,
        completed: Completed,
        exchange: Exchange,
        output: Output,
        started: float,
    ) -> int:
        config = self.config
        if completed.timed_out:
            logger.warning(
                "Killed process %s of %s %s: exec_timeout (%s) reached",
                completed.pid, *_request(scope), _seconds(config.exec_timeout),
            )  # fmt: skip
            await send_response(send, 408, b"Killed process.\n", _TEXT)
            return 408
        if config.write_debug:
            self._log_output(scope, output)
        if completed.exit_code != 0:
            logger.warning(
                "Process %s of %s %s failed: %s", completed.pid, *_request(scope),
                completed.describe(),
            )  # fmt: skip
            await send_output(send, 500, f"{completed.describe()}\n".encode(), output, _TEXT)
            return 500
        response_body = await exchange.success_body(output)
        response_headers = [(b"x-duration-seconds", f"{time.monotonic() - started:.6f}".encode())]
        content_type = config.content_type.encode() if config.content_type else None
        content_type = content_type or _header(headers, b"content-type")
        if content_type:
            response_headers.append((b"content-type", content_type))
        if config.debug_headers:
            logger.info(
                "Response headers of %s %s: %s", *_request(scope), _show_headers(response_headers)
            )
        try:
            await send_output(send, 200, b"", response_body, response_headers)
        finally:
            if response_body is not output:
                response_body.close()
        return 200

    def _environment(self, scope: Scope, headers: Headers) -> dict[bytes, bytes]:
        if not self.config.cgi_headers:
            return dict(self.base_environment)
        if self._token is not None:
            # The watchdog checked the token, so the function has no need to see the secret.
            headers = [(name, value) for name, value in headers if name != b"authorization"]
        return environ.cgi_environment(
            self.base_environment,
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"],
            host=_header(headers, b"host") or b"",
            headers=headers,
        )

    def _log_output(self, scope: Scope, output: Output) -> None:
        head = output.head(DEBUG_LOG_LIMIT)
        cut = output.size - len(head)
        logger.info(
            "Query %r, path %r, output %r%s",
            scope["query_string"].decode("latin-1"), scope["path"], head,
            f" ({cut} more bytes not logged)" if cut else "",
        )  # fmt: skip


class _CountingSend:
    """An ASGI send that counts the response body bytes, for the access log."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.sent = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self.send(message)


def _failure(error: Exception, config: Config) -> tuple[int, str] | None:
    """Map an exception of the request path to a status and a one-line reason, or None."""
    if isinstance(error, BodyTooLarge):
        return 413, f"Request body is larger than max_body_size ({config.max_body_size} bytes)"
    if isinstance(error, BadRequest):
        return 400, str(error)
    if isinstance(error, environ.HeaderTooLarge):
        return 431, str(error)
    if isinstance(error, SpawnError):
        return (503 if error.resource_exhausted else 500), str(error)
    if isinstance(error, BodyTimeout):
        return 408, f"Timed out reading the request body: read_timeout is " \
            f"{_seconds(config.read_timeout)}"  # fmt: skip
    if isinstance(error, WriteTimeout):
        return 504, f"Timed out: the function did not finish within write_timeout " \
            f"({_seconds(config.write_timeout)})"  # fmt: skip
    if isinstance(error, OutputError):
        return 507, str(error)
    if isinstance(error, ShuttingDown):
        return 503, "The watchdog is shutting down and stopped this request"
    return None


def _check_declared_size(headers: Headers, max_body_size: int) -> None:
    if not max_body_size:
        return
    declared = _header(headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_size:
        raise BodyTooLarge


def _request(scope: Scope) -> tuple[str, str]:
    return scope["method"], scope["path"]


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _show_headers(headers: Headers) -> str:
    shown = []
    for name, value in headers:
        if name.lower() in (b"authorization", b"proxy-authorization", b"cookie"):
            value = b"****"
        shown.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
    return "; ".join(shown)
