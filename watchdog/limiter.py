"""The max_inflight slots: a non-blocking counter, since a request over the limit is rejected."""

from __future__ import annotations

__all__ = ["Limiter"]


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
