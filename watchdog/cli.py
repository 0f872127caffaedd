"""The `fwatchdog` command: flags, logging set-up and starting the server."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from . import __version__
from .config import OPTIONS, ConfigError, load_config
from .lifecycle import lock_file_path
from .logs import configure_logging

__all__ = ["configuration_table", "environment_help", "main"]


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
    # Imported here so that --run-healthcheck, run by every exec probe, does not load uvicorn.
    from .serving import serve

    return serve(config)
