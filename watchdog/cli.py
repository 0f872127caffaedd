"""The `fwatchdog` command: flags, logging set-up and starting the server."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import textwrap

import uvicorn

from . import __version__
from .app import build_app
from .config import OPTIONS, Config, ConfigError, load_config
from .handler import FunctionHandler
from .iomodes import IOMode, RawMode
from .lifecycle import Lifecycle, lock_file_path
from .limiter import Limiter
from .logs import configure_logging
from .metrics import Metrics
from .oscar import OscarMode
from .process import ProcessRunner
from .protocol import protocol_class
from .reaper import Reaper, set_child_subreaper
from .server import WatchdogServer

__all__ = ["configuration_table", "environment_help", "main"]

logger = logging.getLogger("watchdog")

# Connections waiting to be accepted; a burst beyond this is refused by the kernel.
LISTEN_BACKLOG = 2048


def environment_help() -> str:
    """List every environment variable with its default, unit and meaning."""
    lines = ["environment variables (each also read as WATCHDOG_<NAME>; the lower-case name wins):"]
    for option in OPTIONS:
        default = option.default_text()
        if not option.required:
            default = f"default {default}"
        unit = f", in {option.unit}" if option.unit else ""
        lines.append(f"  {option.name} ({default}{unit})")
        lines.extend(
            textwrap.wrap(option.help, 90, initial_indent="      ", subsequent_indent="      ")
        )
        lines.append(f"      accepted: {option.accepted}")
    return "\n".join(lines)


def configuration_table() -> str:
    """Render the options as the Markdown table of the README."""
    rows = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        rows.append(
            f"| `{option.name}` | {option.default_text()} | {option.accepted} | {option.help} |"
        )
    return "\n".join(rows)


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fwatchdog",
        description="Run the process named by fprocess for every HTTP request: the request body "
        "goes to its stdin and its stdout is the response.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fwatchdog {__version__}")
    parser.add_argument(
        "--run-healthcheck",
        action="store_true",
        help="exit 0 when the lock file exists and 1 otherwise, for exec probes",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="print the effective settings (secrets masked) and exit 0, or exit 2 when invalid",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = _parse_arguments(argv)
    if arguments.run_healthcheck:
        return 0 if os.path.exists(lock_file_path()) else 1
    try:
        config = load_config(os.environ)
    except ConfigError as error:
        print(f"fwatchdog: {error}", file=sys.stderr)
        return 2
    if arguments.check_config:
        for name, value in config.describe().items():
            print(f"{name}={value}")
        return 0
    configure_logging(config.log_level, config.log_format)
    return serve(config)


def _listen(port: int) -> socket.socket:
    # asyncio sets TCP_NODELAY on accepted connections only when the socket's proto is
    # IPPROTO_TCP; socket.create_server leaves it 0, and Nagle's algorithm then delays each
    # response body by the client's delayed ACK (40 ms on Linux).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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

    metrics = Metrics()
    try:
        metrics.listen(config.metrics_port)
    except OSError as error:
        logger.error(
            "Failed to listen on metrics_port %s (%s): free the port or set metrics_port",
            config.metrics_port,
            error.strerror or error,
        )
        return 2
    logger.info("Metrics listening on http://0.0.0.0:%s/metrics", config.metrics_port)
    try:
        listener = _listen(config.port)
    except OSError as error:
        logger.error(
            "Failed to listen on port %s (%s): free the port or set port",
            config.port,
            error.strerror or error,
        )
        metrics.close()
        return 2

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
    handler = FunctionHandler(config, runner, Limiter(config.max_inflight), lifecycle, io_mode)
    server_config = uvicorn.Config(
        build_app(handler, lifecycle, metrics),
        http=protocol_class(config.read_timeout),
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = WatchdogServer(server_config, config, lifecycle, reaper, metrics)
    server.run(sockets=[listener])
    return server.exit_code
