"""The pace at the worker, from the moments its calls arrived: exact counts over any window,
the mean rate, counts per bucket, the trailing count as a step function, and `Pace`.

Pure functions of the times (seconds, any origin): no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

WINDOW_SECONDS: Final = 1.0


def max_in_window(times: Sequence[float], window: float = WINDOW_SECONDS) -> tuple[int, float]:
    """The most times within any half-open interval [x, x + window), and the first such x.

    Exact: the busiest interval can always be slid right until it starts at one of the times,
    so trying each time as a start finds it.
    """
    ordered = sorted(times)
    best, best_start, end = 0, ordered[0] if ordered else 0.0, 0
    for begin, start in enumerate(ordered):
        end = max(end, begin)
        while end < len(ordered) and ordered[end] < start + window:
            end += 1
        if end - begin > best:
            best, best_start = end - begin, start
    return best, best_start


def mean_rate(times: Sequence[float], window: float = WINDOW_SECONDS) -> float:
    """Calls per second: the mean, over the run after its first `window`, of the calls in the
    trailing `window`. Unlike calls divided by the run's length, it reads the limit for bursty
    and smooth paces alike (n bursts of `limit` one second apart span only n - 1 seconds)."""
    if not times:
        return 0.0
    start, end = min(times) + window, max(times)
    if end <= start:
        return len(times) / window
    # The integral of the trailing count over [start, end]: each call counts for the part of
    # [t, t + window) that lies inside.
    covered = sum(max(0.0, min(at + window, end) - max(at, start)) for at in times)
    return covered / (end - start) / window


def per_bucket(times: Sequence[float], origin: float, bucket: float, count: int) -> list[int]:
    """How many times fall in each of `count` buckets of `bucket` seconds from `origin`."""
    counts = [0] * count
    for at in times:
        index = math.floor((at - origin) / bucket)
        if 0 <= index < count:
            counts[index] += 1
    return counts


def trailing_series(
    times: Sequence[float], window: float = WINDOW_SECONDS
) -> tuple[list[float], list[int]]:
    """Calls in the trailing window (x - window, x] as a step function of x: the moments it
    changes and its value from each of them on."""
    # A call at t counts for t <= x < t + window; at a tie the leaving call goes first.
    changes = sorted([(at, 1) for at in times] + [(at + window, -1) for at in times])
    moments, values, count = [], [], 0
    for at, step in changes:
        count += step
        moments.append(at)
        values.append(count)
    return moments, values


@dataclass(frozen=True)
class Pace:
    """The calls as the worker saw them arrive."""

    worker_calls: int
    placed_twice: int
    """Tasks (campaignId, contactId, attempts) placed at the worker more than once."""
    span_seconds: float
    achieved_cps: float
    max_in_any_second: int
    busiest_second_start: float
    """Start of the busiest one-second interval, in seconds since the chart's origin."""
    lag_p50: float | None
    lag_p99: float | None
    """Seconds from the moment in a call's callId (stamped as the dial starts) to its arrival
    at the worker: how much the dial path itself (threads, connections) shifts the calls."""
    chart: Path | None
