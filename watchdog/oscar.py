"""The OSCAR I/O mode: the body goes to an input file, and output files make the response.

An OSCAR service script reads the file named by $INPUT_FILE_PATH and writes its results into
$TMP_OUTPUT_DIR. For each request this mode:

- creates an input dir (`fwatchdog-in-*`) and an output dir (`fwatchdog-out-*`) in the temp dir;
- writes a body that is a JSON object to $INPUT_FILE_PATH unchanged, and decodes any other body
  from base64 into that file, chunk by chunk as it arrives;
- gives the process /dev/null as stdin;
- after exit 0, sends one output file base64-encoded, several output files as a base64-encoded
  zip, or the process output unchanged when the output dir contains no file;
- removes both dirs when the request ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterable
from typing import BinaryIO, NoReturn

from .body import RequestBody
from .iomodes import BadRequest, Exchange
from .output import Output
from .process import OutputError

__all__ = [
    "INPUT_FILE_NAME",
    "JSON_PARSE_LIMIT",
    "Base64Decoder",
    "InputStorageError",
    "OscarExchange",
    "OscarMode",
]

logger = logging.getLogger("watchdog")

Headers = list[tuple[bytes, bytes]]

INPUT_FILE_NAME = "input"
# JSON bodies up to this size are parsed in full to check that they are one valid JSON object.
# Larger ones are only checked for valid UTF-8 and for braces at both ends, because parsing them
# would hold the whole document in memory several times over.
JSON_PARSE_LIMIT = 4 * 1024 * 1024
# Read size when encoding output: a multiple of 3 bytes, so the base64 pieces join without padding.
_ENCODE_CHUNK = 3 * 256 * 1024
_WHITESPACE = b" \t\n\r\v\f"
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


class InputStorageError(OutputError):
    """The request body could not be stored in the temp dir (disk full); the handler returns 507."""

    def __str__(self) -> str:
        return f"Failed to store the request body: {self.error.strerror or self.error}"


class Base64Decoder:
    """Decode base64 of the standard alphabet that arrives in chunks of any size.

    Whitespace is allowed anywhere. Padding is required, and only whitespace may follow it.
    `feed` and `finish` raise BadRequest for anything else.
    """

    def __init__(self) -> None:
        self._pending = b""  # the last len % 4 characters, completed by the next chunk
        self._padded = False

    def feed(self, data: bytes) -> bytes:
        """Return the bytes decoded from `data` and the characters held back before it."""
        text = self._pending + data.translate(None, _WHITESPACE)
        if not text:
            return b""
        if self._padded:
            raise _invalid_base64("data follows the '=' padding")
        invalid = _NOT_BASE64.search(text)
        if invalid is not None:
            raise _invalid_base64(_describe_byte(invalid.group()[0]))
        usable = len(text) - len(text) % 4
        self._pending = text[usable:]
        quanta = text[:usable]
        try:
            decoded = binascii.a2b_base64(quanta, strict_mode=True)
        except binascii.Error:
            # Every byte is in the alphabet, so the error is about the position of '='.
            raise _invalid_base64("the '=' padding is misplaced") from None
        self._padded = quanta.endswith(b"=")
        if self._padded and self._pending:
            raise _invalid_base64("data follows the '=' padding")
        return decoded

    def finish(self) -> None:
        """Check that the body ended on a whole 4-character group."""
        if self._pending:
            raise _invalid_base64(
                "its length without whitespace is not a multiple of 4 (is the '=' padding missing?)"
            )


def _invalid_base64(reason: str) -> BadRequest:
    return BadRequest(f"Request body is neither a JSON object nor valid base64: {reason}")


def _describe_byte(value: int) -> str:
    label = f"{value:#04x} ({chr(value)!r})" if 0x20 < value < 0x7F else f"{value:#04x}"
    return f"the byte {label} is not in the standard base64 alphabet"


class _InputFile:
    """Write a request body to the input file: a JSON object as it is, anything else decoded.

    The kind is decided by the first byte that is not whitespace: `{` starts a JSON object, and
    base64 never contains `{`. Leading whitespace is written before the decision because a JSON
    body is kept byte for byte. A base64 body then starts the file again.
    """

    def __init__(self, path: str) -> None:
        self.kind = "empty"
        self.size = 0
        self._file = open(path, "w+b")  # noqa: SIM115 (closed by close())
        self._decoder = Base64Decoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._last = b""

    def write(self, chunk: bytes) -> None:
        if self.kind == "empty":
            start = len(chunk) - len(chunk.lstrip(_WHITESPACE))
            if start == len(chunk):
                self._write_json(chunk)
                return
            if chunk[start] == ord("{"):
                self.kind = "json"
            else:
                self.kind = "base64"
                self._file.seek(0)
                self._file.truncate()
                self.size = 0
        if self.kind == "json":
            self._write_json(chunk)
        else:
            decoded = self._decoder.feed(chunk)
            self._file.write(decoded)
            self.size += len(decoded)

    def _write_json(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)
        end = chunk.rstrip(_WHITESPACE)
        if end:
            self._last = end[-1:]
        try:
            self._utf8.decode(chunk)
        except UnicodeDecodeError:
            raise BadRequest("Invalid JSON body: it is not valid UTF-8") from None

    def finish(self) -> None:
        """Check the whole body once it was received; raises BadRequest."""
        if self.kind == "base64":
            self._decoder.finish()
        elif self.kind == "empty":
            # A body of whitespace only is base64 of nothing.
            self._file.truncate(0)
            self.size = 0
        else:
            self._check_json()
        self._file.flush()

    def _check_json(self) -> None:
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadRequest("Invalid JSON body: it is not valid UTF-8") from None
        if self.size > JSON_PARSE_LIMIT:
            if self._last != b"}":
                raise BadRequest("Invalid JSON body: it starts with '{' but does not end with '}'")
            return
        self._file.seek(0)
        text = self._file.read().decode("utf-8")
        try:
            json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as error:
            raise BadRequest(
                f"Invalid JSON body: {error.msg} at line {error.lineno} column {error.colno}"
            ) from None
        except ValueError as error:
            raise BadRequest(f"Invalid JSON body: {error}") from None
        except RecursionError:
            raise BadRequest("Invalid JSON body: it is nested too deeply") from None

    def close(self) -> None:
        self._file.close()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


class OscarExchange:
    """The input dir, output dir and input file of one request.

    Creating it creates both dirs, and `close` removes them.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        try:
            self.input_dir = tempfile.mkdtemp(prefix="fwatchdog-in-", dir=directory)
        except OSError as error:
            raise InputStorageError(error) from error
        try:
            self.output_dir = tempfile.mkdtemp(prefix="fwatchdog-out-", dir=directory)
        except OSError as error:
            _remove_tree(self.input_dir)
            raise InputStorageError(error) from error
        self.input_path = os.path.join(self.input_dir, INPUT_FILE_NAME)
        self.environment: dict[bytes, bytes] = {
            b"TMP_INPUT_DIR": os.fsencode(self.input_dir),
            b"TMP_OUTPUT_DIR": os.fsencode(self.output_dir),
            b"INPUT_FILE_PATH": os.fsencode(self.input_path),
        }
        self.stdin: AsyncIterable[bytes] | None = None

    async def receive(self, body: AsyncIterable[bytes]) -> _InputFile:
        """Write the body to the input file as it arrives.

        Raises BadRequest for a body this mode cannot use and InputStorageError for a full disk.
        """
        try:
            input_file = _InputFile(self.input_path)
        except OSError as error:
            raise InputStorageError(error) from error
        try:
            async for chunk in body:
                input_file.write(chunk)
            input_file.finish()
        except OSError as error:
            raise InputStorageError(error) from error
        finally:
            input_file.close()
        return input_file

    async def success_body(self, output: Output) -> Output:
        """Build the response from the output dir, or return `output` when the dir has no file.

        Raises OutputError when the files cannot be read or the encoded body cannot be stored.
        The encoding runs in a thread: it takes about 0.3 s for 75 MiB of files on a 2-core VM,
        and the event loop keeps serving meanwhile.
        """
        return await asyncio.to_thread(self._encode_output, output)

    def _encode_output(self, output: Output) -> Output:
        response = Output(directory=self._directory)
        try:
            files = _output_files(self.output_dir)
            if not files:
                response.close()
                logger.debug(
                    "OSCAR output: no file in %s, sending the process output", self.output_dir
                )
                return output
            if len(files) == 1:
                with open(files[0], "rb") as source:
                    _encode_base64(source, response)
            else:
                with tempfile.TemporaryFile(dir=self._directory) as archive:
                    _write_zip(archive, files, self.output_dir)
                    archive.seek(0)
                    _encode_base64(archive, response)
        except OSError as error:
            response.close()
            raise OutputError(error) from error
        except BaseException:
            response.close()
            raise
        logger.debug(
            "OSCAR output: %d file(s) in %s sent as %d bytes of base64",
            len(files), self.output_dir, response.size,
        )  # fmt: skip
        return response

    def close(self) -> None:
        _remove_tree(self.input_dir)
        _remove_tree(self.output_dir)


class OscarMode:
    """The body is written to $INPUT_FILE_PATH; the files written to $TMP_OUTPUT_DIR are returned.

    `directory` is where the per-request dirs and temp files go; None means the temp dir ($TMPDIR).
    """

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory

    async def open(self, body: RequestBody, headers: Headers) -> Exchange:
        exchange = OscarExchange(self.directory)
        try:
            input_file = await exchange.receive(body)
        except BaseException:
            exchange.close()
            raise
        logger.debug(
            "OSCAR input: %s body of %d bytes written to %s as %d bytes",
            input_file.kind, body.size, exchange.input_path, input_file.size,
        )  # fmt: skip
        return exchange


def _raise(error: OSError) -> NoReturn:
    raise error


def _output_files(directory: str) -> list[str]:
    """List the regular files under `directory` (symlinks to regular files included), sorted.

    Directories that are symlinks are not followed. A missing `directory` has no files.
    """
    if not os.path.isdir(directory):
        return []
    found = []
    for root, _dirs, names in os.walk(directory, onerror=_raise):
        for name in names:
            path = os.path.join(root, name)
            if os.path.isfile(path):
                found.append(path)
    return sorted(found)


def _encode_base64(source: BinaryIO, target: Output) -> None:
    # read(n) on a buffered regular file returns n bytes until the end of the file, so each piece
    # but the last is a multiple of 3 bytes and encodes without padding.
    while chunk := source.read(_ENCODE_CHUNK):
        target.write(base64.b64encode(chunk))


def _write_zip(archive: BinaryIO, files: list[str], base: str) -> None:
    """Write `files` to `archive` uncompressed, under their paths relative to `base`."""
    # Stored, not deflated, because this runs on the event loop: deflate at level 1 took 2.4 s for
    # 75 MiB of random data on a 2-core test VM, against 0.3 s for storing and base64 together.
    # strict_timestamps=False stores files dated before 1980 (such as mtime 0) as 1980-01-01.
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, strict_timestamps=False) as zipped:
        for path in files:
            # Names that are not valid UTF-8 get backslash escapes, because zip stores UTF-8.
            name = os.fsencode(os.path.relpath(path, base)).decode("utf-8", "backslashreplace")
            zipped.write(path, name)


def _remove_tree(path: str) -> None:
    """Remove a per-request dir, logging instead of raising when that fails."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    # Without root, a dir that the process made read-only cannot be emptied. The watchdog owns
    # the tree, so it restores the permissions (never through a symlink) and tries once more.
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _names in os.walk(path):
        for name in dirs:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)
    try:
        shutil.rmtree(path)
    except OSError as error:
        logger.warning("Failed to remove the temp dir %s: %s", path, error)
