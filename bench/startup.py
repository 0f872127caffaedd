"""Time from exec to the first 200 from GET /_/health, for several watchdog commands.

Usage: python startup.py RUNS NAME=COMMAND...   Runs are interleaved across the commands so
that background load hits all of them alike. Prints the median, min and max in ms.
"""

import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"GET /_/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def measure(command: list[str]) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmpdir:
        environment = {
            "PATH": "/usr/bin:/bin",
            "TMPDIR": tmpdir,
            "fprocess": "cat",
            "port": str(port),
            "metrics_port": str(free_port()),
        }
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while not healthy(port):
            if process.poll() is not None or time.perf_counter() > started + 30:
                raise SystemExit(f"{command} exited or never became healthy")
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
        process.send_signal(signal.SIGINT)
        process.wait(30)
    return elapsed * 1000


runs = int(sys.argv[1])
commands = dict(argument.split("=", 1) for argument in sys.argv[2:])
for command in commands.values():
    measure(command.split())  # warm the page cache
times: dict[str, list[float]] = {name: [] for name in commands}
for _ in range(runs):
    for name, command in commands.items():
        times[name].append(measure(command.split()))
for name, values in times.items():
    print(
        f"{name}: median {statistics.median(values):.0f} ms, min {min(values):.0f},"
        f" max {max(values):.0f} ({runs} runs)"
    )
