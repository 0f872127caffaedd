"""The output buffer: a function's output in memory up to a bound, then in a temp file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["MEMORY_LIMIT", "Output"]

# Output up to this size stays in memory; beyond it the whole output moves to a temp file, so the
# watchdog's memory does not grow with the output of its functions.
MEMORY_LIMIT = 1024 * 1024
_CHUNK_SIZE = 256 * 1024


class Output:
    """Bytes written by a function process, read back once to build the response.

    The temp file is created with `tempfile.TemporaryFile`, which has no name on Linux (O_TMPFILE)
    or is unlinked at once elsewhere, so nothing is left in the temp dir whatever happens.
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT, directory: str | None = None) -> None:
        self.size = 0
        self._memory_limit = memory_limit
        self._directory = directory
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None

    @property
    def spooled(self) -> bool:
        """True once the output went to a temp file."""
        return self._file is not None

    def write(self, data: bytes) -> None:
        """Append data; raises OSError when the temp file cannot be created or written."""
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
        else:
            self._chunks.append(data)
            if self.size <= self._memory_limit:
                return
            self._file = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115
            self._file.writelines(self._chunks)
            self._chunks = []
        # A small write only fills the file's buffer. Flushing makes a full disk fail this call,
        # while the request can still get a 507 response, and not chunks() after the response began.
        self._file.flush()

    def getvalue(self) -> bytes:
        """Return the whole output; only for output that stayed in memory."""
        if self._file is not None:
            raise RuntimeError("the output is in a temp file: read it with chunks()")
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def head(self, limit: int) -> bytes:
        """Return at most the first `limit` bytes, for logging."""
        if self._file is None:
            return self.getvalue()[:limit]
        self._file.flush()
        return os.pread(self._file.fileno(), limit, 0)

    def chunks(self) -> Iterator[bytes]:
        """Yield the whole output in order."""
        if self._file is None:
            if self.size:
                yield self.getvalue()
            return
        self._file.flush()
        offset = 0
        while offset < self.size:
            chunk = os.pread(self._file.fileno(), _CHUNK_SIZE, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        """Release the memory or the temp file; safe to call twice."""
        self._chunks = []
        if self._file is not None:
            # After a failed write, close() fails again to flush the buffered data. The descriptor
            # is closed all the same, and the error was already reported by write().
            with contextlib.suppress(OSError):
                self._file.close()
