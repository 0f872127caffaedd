"""The request mix of the soak: what each request does and which responses are correct for it.

Every request goes to tests/functions/soak_function.sh, which picks its behaviour from the path.
Request bodies are slices of one random buffer, so each echo is checked by SHA-256 without
keeping a copy. 429 is a correct response to every request, and 408 `Killed process.` to every
request whose function can run past exec_timeout on a loaded machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from tests.soak.client import Connection, Response, ResponseError

__all__ = ["KINDS", "Kind", "Outcome", "Payloads", "Request", "execute", "make_plan"]

KiB = 1024
MiB = 1024 * 1024
MAX_BODY = 32 * MiB
BIG_OUTPUT_SIZE = 4 * MiB

KILLED = b"Killed process.\n"
BUSY_PREFIX = b"Concurrent request limit exceeded."


class Payloads:
    """The random bytes that request bodies are cut from, and the 4 MiB output of /big."""

    def __init__(self, directory: Path, seed: int, max_body: int = MAX_BODY) -> None:
        generator = random.Random(seed)
        self.data = memoryview(generator.randbytes(max_body + MiB))
        self.max_body = max_body
        self.big_output = directory / "big-output"
        big = generator.randbytes(BIG_OUTPUT_SIZE)
        self.big_output.write_bytes(big)
        self.big_digest = hashlib.sha256(big).digest()

    def body(self, offset: int, size: int) -> memoryview:
        return self.data[offset : offset + size]


@dataclasses.dataclass(frozen=True)
class Kind:
    """One behaviour of the soak function: its path, share of the mix and largest body."""

    name: str
    path: str
    weight: int
    max_body: int
    # The status of a run that went as planned; others (408, 429) are allowed but counted.
    status: int


KINDS = (
    Kind("echo", "/echo", 30, MAX_BODY, 200),
    Kind("fail", "/fail", 10, 64 * KiB, 500),
    Kind("timeout", "/timeout", 5, 64 * KiB, 408),
    Kind("orphan", "/orphan", 5, 4 * KiB, 200),
    Kind("ignore", "/ignore", 10, 4 * MiB, 200),
    Kind("big", "/big", 10, 0, 200),
    Kind("slow", "/slow", 10, 512 * KiB, 200),
)
_KIND = {kind.name: kind for kind in KINDS}

# (smallest, largest) body size of each size class and its share of the requests.
_SIZE_CLASSES = (
    ((0, 0), 10),
    ((1, KiB), 30),
    ((KiB, 64 * KiB), 30),
    ((64 * KiB, MiB), 20),
    ((MiB, 8 * MiB), 8),
    ((8 * MiB, 32 * MiB), 2),
)


@dataclasses.dataclass(frozen=True)
class Request:
    """One planned request.

    `action` is `normal`, `abort_upload` (PUT, the client closes mid-body) or `abort_download`
    (PATCH, the client closes mid-response). Distinct methods keep the metrics comparable, because
    the server may respond to an aborted upload with a 429 that the client never reads.
    """

    index: int
    kind: str
    method: str
    action: str
    size: int
    offset: int
    chunked: bool
    keep_alive: bool
    seed: int

    @property
    def path(self) -> str:
        return _KIND[self.kind].path


def _body_size(generator: random.Random, largest: int) -> int:
    classes = [bounds for bounds, _ in _SIZE_CLASSES]
    weights = [weight for _, weight in _SIZE_CLASSES]
    low, high = generator.choices(classes, weights)[0]
    high = min(high, largest)
    low = min(low, high)
    if high <= 1:
        return high
    # Log-uniform inside the class, so small sizes are as common as large ones.
    return int(math.exp(generator.uniform(math.log(max(low, 1)), math.log(high))))


def make_plan(
    count: int, seed: int, max_body: int = MAX_BODY, first_index: int = 0
) -> list[Request]:
    """Return `count` requests drawn from the mix with a fixed seed."""
    generator = random.Random(seed)
    plan = []
    for index in range(first_index, first_index + count):
        roll = generator.random()
        if roll < 0.06:
            kind, action, method = "echo", "abort_upload", "PUT"
            size = generator.randint(256 * KiB, min(4 * MiB, max_body))
        elif roll < 0.12:
            kind, action, method = "big", "abort_download", "PATCH"
            size = 0
        else:
            chosen = generator.choices(KINDS, [kind.weight for kind in KINDS])[0]
            kind, action = chosen.name, "normal"
            size = _body_size(generator, min(chosen.max_body, max_body))
            method = "GET" if size == 0 and generator.random() < 0.5 else "POST"
        plan.append(
            Request(
                index=index,
                kind=kind,
                method=method,
                action=action,
                size=size,
                offset=generator.randint(0, MiB),
                chunked=size > 0 and generator.random() < 0.25,
                keep_alive=generator.random() < 0.6,
                seed=generator.getrandbits(32),
            )
        )
    return plan


@dataclasses.dataclass
class Outcome:
    """What the client saw of one request.

    `status` is None when no response head arrived. `problem` names what was wrong with the
    response, and `error` the transport error (reset, timeout, closed early), if any.
    """

    request: Request
    started: float
    finished: float
    status: int | None = None
    problem: str | None = None
    error: str | None = None
    reused_connection: bool = False
    response_bytes: int = 0
    sent_all: bool = False
    keep_alive_allowed: bool = False

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def check_response(request: Request, response: Response, payloads: Payloads) -> str | None:
    """Return what is wrong with `response` as the response to `request`, or None."""
    status = response.status
    if status == 429:
        return None if response.prefix.startswith(BUSY_PREFIX) else "429 without its message"
    if status == 408:
        return None if response.prefix == KILLED else f"408 with {response.prefix[:80]!r}"
    if not response.complete and request.action != "abort_download":
        return "response cut short"
    kind = request.kind
    if kind in ("echo", "slow") and status == 200:
        expected = hashlib.sha256(payloads.body(request.offset, request.size)).digest()
        if response.length != request.size or response.digest != expected:
            return f"echo of {request.size} bytes came back as {response.length} other bytes"
        return None
    if kind == "big" and status == 200:
        if request.action == "abort_download":
            return None
        if response.digest != payloads.big_digest:
            return f"/big sent {response.length} bytes that differ from the file"
        return None
    expected_bodies = {
        ("fail", 500): b"exit status 3\nfailing on purpose\n",
        ("orphan", 200): b"done\n",
        ("ignore", 200): b"ignored\n",
    }
    expected_body = expected_bodies.get((kind, status))
    if expected_body is None:
        return f"unexpected status {status} with {response.prefix[:120]!r}"
    if response.prefix != expected_body:
        return f"{status} with {response.prefix[:120]!r} instead of {expected_body!r}"
    return None


Connector = Callable[[float], Connection]


def execute(
    request: Request,
    connection: Connection | None,
    connect: Connector,
    payloads: Payloads,
    timeout: float,
) -> tuple[Outcome, Connection | None]:
    """Send `request` and return its outcome and the connection to reuse next, if any.

    `connection` is the one the previous request left open, or None to connect anew.
    """
    started = time.monotonic()
    deadline = started + timeout
    outcome = Outcome(request, started, started)
    try:
        if connection is None:
            connection = connect(deadline)
        else:
            outcome.reused_connection = True
        received = connection.bytes_received
        try:
            _exchange(request, connection, payloads, deadline, outcome)
        finally:
            outcome.response_bytes = connection.bytes_received - received
    except (OSError, ResponseError, ValueError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.finished = time.monotonic()
    reusable = (
        connection is not None
        and outcome.error is None
        and outcome.sent_all
        and request.keep_alive
        and request.action == "normal"
        and outcome.status is not None
        and outcome.keep_alive_allowed
    )
    if connection is not None and not reusable:
        connection.close()
        connection = None
    return outcome, connection


def _exchange(
    request: Request,
    connection: Connection,
    payloads: Payloads,
    deadline: float,
    outcome: Outcome,
) -> None:
    body = payloads.body(request.offset, request.size)
    chunk_sizes = random.Random(request.seed) if request.chunked else None
    send_limit = None
    if request.action == "abort_upload":
        send_limit = random.Random(request.seed).randint(1, max(request.size // 2, 1))
    send_error: OSError | None = None
    try:
        connection.send_request(
            request.method,
            request.path,
            body,
            deadline,
            keep_alive=request.keep_alive,
            chunk_sizes=chunk_sizes,
            send_limit=send_limit,
        )
        outcome.sent_all = send_limit is None
    except (BrokenPipeError, ConnectionResetError) as error:
        # The server may respond before it reads the whole body (429, an early exit) and close.
        send_error = error
    if request.action == "abort_upload":
        return
    stop_after = 64 * KiB if request.action == "abort_download" else None
    try:
        response = connection.read_response(deadline, stop_after=stop_after)
    except (OSError, ResponseError) as error:
        if send_error is None:
            raise
        raise ResponseError(
            f"sending failed ({send_error!r}) and no response followed ({error!r})"
        ) from None
    outcome.status = response.status
    outcome.keep_alive_allowed = response.keep_alive
    outcome.problem = check_response(request, response, payloads)
