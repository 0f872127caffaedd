"""Percentiles and summaries shared by the load generators and the report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], percent: float) -> float | None:
    """Return the nearest-rank percentile of values sorted in ascending order, or None."""
    if not sorted_values:
        return None
    rank = math.ceil(percent / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def latency_summary_ms(latencies_ns: Iterable[int]) -> dict[str, float | None]:
    """Return p50, p90, p99 and max of latencies given in nanoseconds, in milliseconds."""
    ordered = sorted(latencies_ns)
    summary: dict[str, float | None] = {}
    for name, percent in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
        value = percentile(ordered, percent)
        summary[name] = None if value is None else round(value / 1e6, 3)
    return summary


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Return the median, min and max of the values that are not None, or None if none are."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
