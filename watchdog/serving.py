"""Starting the watchdog: the listeners, the pieces of the app and the uvicorn server."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

import uvicorn

from . import __version__
from .app import build_app
from .config import Config
from .handler import FunctionHandler
from .iomodes import IOMode, RawMode
from .lifecycle import Lifecycle
from .limiter import Limiter, SharedLimiter
from .metrics import Metrics
from .oscar import OscarMode
from .process import ProcessRunner
from .protocol import protocol_class
from .reaper import Reaper, set_child_subreaper
from .server import WatchdogServer

__all__ = ["LISTEN_BACKLOG", "listen", "log_busy_port", "run_server", "serve"]

logger = logging.getLogger("watchdog")

# Connections waiting to be accepted; a burst beyond this is refused by the kernel.
LISTEN_BACKLOG = 2048


def listen(port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind and listen on `port` on every address; raises OSError when it is busy.

    With `reuse_port`, several sockets can share the port, and the kernel spreads new
    connections over them (SO_REUSEPORT).
    """
    # asyncio sets TCP_NODELAY on accepted connections only when the socket's proto is
    # IPPROTO_TCP; socket.create_server leaves it 0, and Nagle's algorithm then delays each
    # response body by the client's delayed ACK (40 ms on Linux).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


def serve(config: Config) -> int:
    """Serve until a signal ends the shutdown sequence; returns the exit status."""
    settings = " ".join(f"{name}={value}" for name, value in config.describe().items())
    logger.info("Starting fwatchdog %s: %s", __version__, settings)
    if config.workers > 1:
        from .workers import supervise

        return supervise(config)

    metrics = Metrics()
    try:
        metrics_port = metrics.listen(config.metrics_port)
    except OSError as error:
        log_busy_port("metrics_port", config.metrics_port, error)
        return 2
    logger.info("Metrics listening on http://0.0.0.0:%s/metrics", metrics_port)
    try:
        listener = listen(config.port)
    except OSError as error:
        log_busy_port("port", config.port, error)
        metrics.close()
        return 2
    return run_server(config, listener, metrics, Limiter(config.max_inflight))


def log_busy_port(name: str, port: int, error: OSError) -> None:
    logger.error(
        "Failed to listen on %s %s (%s): free the port or set %s",
        name, port, error.strerror or error, name,
    )  # fmt: skip


def run_server(
    config: Config,
    listener: socket.socket,
    metrics: Metrics,
    limiter: Limiter | SharedLimiter,
    base_environment: Mapping[bytes, bytes] | None = None,
    parent_death_signal: int | None = None,
) -> int:
    """Serve the function on `listener` until the shutdown sequence ends; return the exit status.

    `base_environment` is what every function process inherits (default: this process's), and
    `parent_death_signal` the signal that a worker gets when its supervisor dies.
    """
    if set_child_subreaper():
        logger.info("Registered as child subreaper: orphaned processes are reaped here")
    reaper = Reaper()
    lifecycle = Lifecycle(config.suppress_lock)
    runner = ProcessRunner(
        config.fprocess,
        reaper,
        combine_output=config.combine_output,
        exec_timeout=config.exec_timeout,
    )
    io_mode: IOMode = OscarMode() if config.io_mode == "oscar" else RawMode(config.marshal_request)
    handler = FunctionHandler(config, runner, limiter, lifecycle, io_mode, base_environment)
    server_config = uvicorn.Config(
        build_app(handler, lifecycle, metrics),
        http=protocol_class(config.read_timeout),
        loop="asyncio",
        lifespan="off",
        ws="none",
        # The watchdog has no use for a client address taken from X-Forwarded-For.
        proxy_headers=False,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = WatchdogServer(server_config, config, lifecycle, reaper, metrics, parent_death_signal)
    server.run(sockets=[listener])
    return server.exit_code
