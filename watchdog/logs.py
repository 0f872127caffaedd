"""Logging set-up: text lines or one JSON object per line, always on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["JsonFormatter", "RepeatedWarning", "configure_logging", "tag_worker"]


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        worker = getattr(record, "worker_number", None)
        if worker is not None:
            document["worker"] = worker
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class RepeatedWarning:
    """A warning that may repeat thousands of times a second, logged at most once per interval.

    The next line that is logged says how many were left out, so the count is never lost.
    """

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self._left_out = 0

    def warning(self, message: str, *arguments: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + self._interval
        if self._left_out:
            message += " (and %d more like it since the last such line)"
            arguments = (*arguments, self._left_out)
            self._left_out = 0
        self._logger.warning(message, *arguments)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send the watchdog's and uvicorn's records to stderr, never to stdout."""
    # No format shows the thread, the process or the caller's source line, and the access log
    # writes a record per request, so these flags turn off their look-ups.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s%(worker)s: %(message)s",
                defaults={"worker": ""},
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's start-up lines repeat what the watchdog logs itself; its errors still show.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").disabled = True


class _WorkerTag(logging.Filter):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = f" [worker {self.number}]"
        record.worker_number = self.number
        return True


def tag_worker(number: int) -> None:
    """Show `number` in every later log line of this process, for a worker of several."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(number))
