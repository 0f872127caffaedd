"""The max_inflight slots: a non-blocking counter, since a request over the limit is rejected."""

from __future__ import annotations

import multiprocessing

__all__ = ["Limiter", "SharedLimiter"]


class Limiter:
    """Count the function requests in flight against a maximum (0 means no maximum).

    The event loop runs one callback at a time, so the counter needs no lock.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.in_flight = 0

    def try_acquire(self) -> bool:
        """Take a slot and return True, or return False at once when all slots are taken."""
        if self.maximum and self.in_flight >= self.maximum:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by try_acquire."""
        if self.in_flight <= 0:
            raise RuntimeError("Limiter.release() called more often than try_acquire()")
        self.in_flight -= 1


class SharedLimiter:
    """Limiter's counter in shared memory, for worker processes forked after it is made.

    The workers run at the same time, so a lock guards each check and update. Only a positive
    maximum needs one: with no maximum, each worker keeps a Limiter of its own.

    NOTE: a worker killed while it holds the lock (a few bytecodes long) leaves it held, and the
    other workers then block in try_acquire while the supervisor stops them.
    """

    def __init__(self, maximum: int) -> None:
        if maximum <= 0:
            raise ValueError("SharedLimiter needs a positive maximum")
        self.maximum = maximum
        context = multiprocessing.get_context("fork")
        self._lock = context.Lock()
        self._count = context.RawValue("i", 0)

    @property
    def in_flight(self) -> int:
        return int(self._count.value)

    def try_acquire(self) -> bool:
        """Take a slot and return True, or return False at once when all slots are taken."""
        with self._lock:
            if self._count.value >= self.maximum:
                return False
            self._count.value += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by try_acquire."""
        with self._lock:
            if self._count.value <= 0:
                raise RuntimeError("SharedLimiter.release() called more often than try_acquire()")
            self._count.value -= 1
