"""The pace at the worker, from the moments its calls arrived: exact counts over any window,
mean trailing counts, counts per bucket, the trailing count as a step function, and `Pace`.

Pure functions of the times (seconds, any origin): no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .chart import Trace

WINDOW_SECONDS: Final = 1.0
TENTH_SECONDS: Final = 0.1


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


def mean_trailing(
    times: Sequence[float], start: float, end: float, window: float = WINDOW_SECONDS
) -> float:
    """The mean, over every moment x in [start, end], of the times in the trailing window
    (x - window, x]; `end` must be after `start`."""
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    # The integral of the trailing count over [start, end]: each time t counts for the part of
    # [t, t + window) that lies inside.
    covered = sum(max(0.0, min(at + window, end) - max(at, start)) for at in times)
    return covered / (end - start)


def mean_rate(times: Sequence[float], window: float = WINDOW_SECONDS) -> float:
    """Calls per second: the mean, over the run after its first `window`, of the calls in the
    trailing `window`. Unlike calls divided by the run's length, it reads the limit for bursty
    and smooth paces alike (n bursts of `limit` one second apart span only n - 1 seconds)."""
    if not times:
        return 0.0
    start, end = min(times) + window, max(times)
    if end <= start:
        return len(times) / window
    return mean_trailing(times, start, end, window) / window


def steady_part(
    times: Sequence[float], demand_fell: float | None, warm_up: float = WINDOW_SECONDS
) -> tuple[float, float] | None:
    """The part of the run in which demand surely exceeded the limit: from `warm_up` after the
    first time (the trailing window is full) to `demand_fell` (when the backlog ran dry), or to
    the last time; None when that leaves nothing."""
    if not times:
        return None
    start = min(times) + warm_up
    end = max(times) if demand_fell is None else min(demand_fell, max(times))
    return (start, end) if end > start else None


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
    """The calls as the worker saw them arrive, and the counters the limiter kept for them."""

    worker_calls: int
    placed_twice: int
    """Tasks (campaignId, contactId, attempts) placed at the worker more than once."""
    span_seconds: float
    achieved_cps: float
    max_in_any_second: int
    """The most calls in any interval of 1 s, swept over every arrival (not aligned seconds)."""
    busiest_second_start: float
    """Start of the busiest one-second interval, in seconds since the chart's origin."""
    max_in_second_less_jitter: int
    """The most calls in any interval of 1 s less the allowance for arrival jitter."""
    max_in_any_tenth: int
    """The most calls in any interval of 100 ms, swept the same way."""
    steady: tuple[float, float] | None
    """The steady part (`steady_part`), in seconds since the chart's origin."""
    steady_cps: float | None
    """Calls per second over the steady part: the mean of the trailing second's count."""
    max_counter: int | None
    """The highest ``cps:<ts>`` counter the run left in Redis; None when the strategy keeps
    none."""
    lag_p50: float | None
    lag_p99: float | None
    """Seconds from the moment in a call's callId (stamped as the dial starts) to its arrival
    at the worker: how much the dial path itself (threads, connections) shifts the calls."""
    chart: Path | None
    trace: Trace | None = None
    """What the chart draws, for charts that put several runs side by side."""
