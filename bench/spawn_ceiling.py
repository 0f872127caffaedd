"""Measure how fast this machine can run the throughput function without any HTTP.

    python -m bench.spawn_ceiling --duration 5

One worker process runs per core. Each worker starts ``cat`` with ``os.posix_spawn``, writes a
1 KiB body to its stdin, reads its stdout to the end and reaps it, in a loop for a fixed time.
The sum of the workers' spawns/s is the ceiling that a watchdog's requests/s is set against.
The module's ``main`` is one worker and prints its count as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from bench import servers

# Time allowed beyond the run's duration for the workers to start and report.
_WORKER_GRACE_S = 30.0
# Default capacity of a Linux pipe, from pipe(7).
_PIPE_BUFFER_BYTES = 65536


def _spawn_once(program: str, body: bytes) -> None:
    """Run ``program`` once with ``body`` on stdin and read its stdout to the end."""
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin_read, 0),
        (os.POSIX_SPAWN_DUP2, stdout_write, 1),
        (os.POSIX_SPAWN_CLOSE, stdin_write),
        (os.POSIX_SPAWN_CLOSE, stdout_read),
    ]
    try:
        pid = os.posix_spawn(program, [program], os.environ, file_actions=actions)
    finally:
        os.close(stdin_read)
        os.close(stdout_write)
    try:
        # run_worker limits the body to the pipe buffer, so writing it all before reading
        # cannot block.
        os.write(stdin_write, body)
        os.close(stdin_write)
        stdin_write = -1
        while os.read(stdout_read, 65536):
            pass
    finally:
        if stdin_write >= 0:
            os.close(stdin_write)
        os.close(stdout_read)
        os.waitpid(pid, 0)


def run_worker(program: str, body_size: int, duration_s: float) -> dict[str, Any]:
    """Spawn ``program`` in a loop for ``duration_s`` seconds and return the count."""
    if body_size > _PIPE_BUFFER_BYTES:
        raise ValueError(f"body size {body_size} exceeds the pipe buffer of {_PIPE_BUFFER_BYTES}")
    body = b"x" * body_size
    spawns = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while time.perf_counter() < deadline:
        _spawn_once(program, body)
        spawns += 1
    return {"spawns": spawns, "elapsed_s": time.perf_counter() - started}


def measure(duration_s: float, body_size: int = 1024, workers: int | None = None) -> dict[str, Any]:
    """Run one worker process per core at once and return the total spawns/s."""
    program = shutil.which("cat")
    if program is None:
        raise servers.ServerError("cat is not on PATH")
    count = workers or os.cpu_count() or 1
    args = [f"--program={program}", f"--duration={duration_s}", f"--body-size={body_size}"]
    command = [sys.executable, "-m", "bench.spawn_ceiling", *args]
    procs = [
        servers.start_process(command, env=servers.helper_env(), stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    results = []
    try:
        for proc in procs:
            stdout, _ = proc.communicate(timeout=duration_s + _WORKER_GRACE_S)
            if proc.returncode != 0:
                raise servers.ServerError(
                    f"spawn-ceiling worker failed with exit code {proc.returncode}"
                )
            results.append(json.loads(stdout))
    finally:
        for proc in procs:
            servers.stop_process(proc, 5.0)

    spawns_per_s = sum(result["spawns"] / result["elapsed_s"] for result in results)
    return {
        "program": program,
        "body_size": body_size,
        "workers": count,
        "spawns": sum(result["spawns"] for result in results),
        "spawns_per_s": round(spawns_per_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spawn_ceiling", description=__doc__)
    parser.add_argument("--program", default=shutil.which("cat"), help="program to spawn")
    parser.add_argument("--duration", type=float, required=True, help="run time in seconds")
    parser.add_argument("--body-size", type=int, default=1024, help="stdin bytes per spawn")
    args = parser.parse_args(argv)
    json.dump(run_worker(args.program, args.body_size, args.duration), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
