"""Progress bar on stderr: what runs now, how much is done and about how long is left.

On a terminal the bar is redrawn in place twice a second. Elsewhere, such as in CI logs, one
line is printed whenever a step or sub-step starts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

_BAR_WIDTH = 24
_REDRAW_INTERVAL_S = 0.5


def _format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Progress of a run whose steps have estimated durations in seconds."""

    def __init__(
        self, estimates_s: Sequence[float], enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self._estimates = list(estimates_s)
        self._total = sum(self._estimates) or 1.0
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._interactive = self._stream.isatty()
        self._index = -1
        self._label = ""
        self._detail = ""
        self._step_started = time.monotonic()
        self._lock = threading.Lock()  # guards the step state
        self._write_lock = threading.Lock()  # keeps lines from two threads apart
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled and self._interactive:
            self._thread = threading.Thread(target=self._redraw_loop, daemon=True)
            self._thread.start()

    def begin(self, index: int, label: str) -> None:
        """Mark step ``index`` (counted from 0) as running."""
        with self._lock:
            self._index = index
            self._label = label
            self._detail = ""
            self._step_started = time.monotonic()
        self._show()

    def note(self, detail: str) -> None:
        """Show what the current step is doing now, such as a connection count."""
        with self._lock:
            self._detail = detail
        self._show()

    def message(self, text: str) -> None:
        """Print a line of text above the bar."""
        with self._write_lock:
            if self._interactive and self._enabled:
                self._stream.write("\r\x1b[K")
            self._stream.write(text + "\n")
            self._stream.flush()
        if self._interactive:
            self._show()

    def close(self) -> None:
        """Stop redrawing and end the bar's line."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self._enabled and self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self) -> str:
        with self._lock:
            index = self._index
            elapsed = time.monotonic() - self._step_started
            label = f"{self._label}: {self._detail}" if self._detail else self._label
        if index < 0:
            return "starting"
        done = sum(self._estimates[:index]) + min(elapsed, self._estimates[index])
        left = sum(self._estimates[index + 1 :]) + max(0.0, self._estimates[index] - elapsed)
        fraction = min(done / self._total, 1.0)
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        step = f"{index + 1}/{len(self._estimates)}"
        return f"[{bar}] {fraction:4.0%} step {step} {label}, about {_format_duration(left)} left"

    def _show(self) -> None:
        if not self._enabled:
            return
        line = self._line()
        with self._write_lock:
            if self._interactive:
                self._stream.write("\r\x1b[K" + line)
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def _redraw_loop(self) -> None:
        while not self._stopped.wait(_REDRAW_INTERVAL_S):
            self._show()


class ProgressLogHandler(logging.Handler):
    """Logging handler that prints records above the progress bar instead of through it."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._progress.message(self.format(record))
        except Exception:
            self.handleError(record)
