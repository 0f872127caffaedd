"""Function of the overload scenario: echo stdin to stdout and record the maximum concurrency.

    python count_inflight.py COUNTER_FILE

COUNTER_FILE contains a JSON object {"running": [pids], "max": n}, or nothing before the
first update. Every copy of this script adds its pid when it starts and removes it before it
exits, and "max" keeps the largest number of pids ever listed at once. Updates hold an
exclusive flock on COUNTER_FILE.lock and replace the file with a rename, so a copy that the
watchdog kills midway leaves either the old or the new state. A pid whose process has
exited or is a zombie is dropped on the next update, so a killed copy is not counted forever.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from typing import Any


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            state = stat_file.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _update(path: str, enter: bool) -> None:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as counter:
                text = counter.read()
        except FileNotFoundError:
            text = ""
        state: dict[str, Any] = json.loads(text) if text.strip() else {"running": [], "max": 0}

        running: list[int] = [
            pid for pid in state["running"] if pid != os.getpid() and _is_running(pid)
        ]
        if enter:
            running.append(os.getpid())
        maximum = max(int(state["max"]), len(running))

        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as new_counter:
            new_counter.write(json.dumps({"running": running, "max": maximum}))
        os.replace(temporary, path)
        # Closing the lock file releases the lock.


def main() -> int:
    path = sys.argv[1]
    _update(path, enter=True)
    try:
        sys.stdout.buffer.write(sys.stdin.buffer.read())
        sys.stdout.buffer.flush()
    finally:
        # Counted out while stdout is still open. The watchdog reads the end of the output
        # only when this process exits, so it cannot start a successor before this update.
        _update(path, enter=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
