"""Function of the overload scenario: echo stdin to stdout and record the maximum concurrency.

    python count_inflight.py COUNTER_FILE

COUNTER_FILE contains a JSON object {"running": [pids], "max": n}. Every copy of this script
adds its pid under an exclusive flock when it starts and removes it before it exits, and
"max" keeps the largest number of pids ever listed at once. A pid whose process has exited
or is a zombie is dropped on the next update, so a copy killed by the watchdog is not
counted forever. The file must exist before the first copy runs; an empty file is allowed.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            state = stat_file.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _update(path: str, enter: bool) -> None:
    with open(path, "r+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        text = counter.read()
        state = json.loads(text) if text.strip() else {"running": [], "max": 0}
        running = [pid for pid in state["running"] if pid != os.getpid() and _is_running(pid)]
        if enter:
            running.append(os.getpid())
        state = {"running": running, "max": max(state["max"], len(running))}
        counter.seek(0)
        counter.truncate()
        counter.write(json.dumps(state))
        # Closing the file releases the lock.


def main() -> int:
    path = sys.argv[1]
    _update(path, enter=True)
    try:
        sys.stdout.buffer.write(sys.stdin.buffer.read())
        sys.stdout.buffer.flush()
    finally:
        # Counted out while stdout is still open: the watchdog sees the end of the output
        # only when this process exits, so it cannot start a successor before this update.
        _update(path, enter=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
