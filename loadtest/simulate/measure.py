"""The pace of a run, measured where a carrier would: over the moments the worker stamped on
its calls, with the limiter's own per-second counters beside them; writes the chart."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Final

from loadtest.worker_stub import Call, Outcome

from .chart import Trace, write_chart
from .config import SimulationConfig
from .monitor import Monitor
from .pace import (
    TENTH_SECONDS,
    WINDOW_SECONDS,
    Pace,
    max_in_window,
    mean_rate,
    mean_trailing,
    steady_part,
)
from .targets import JITTER_ALLOWANCE

# Outcomes of a request that surely placed no call at the worker.
NOT_PLACED: Final = frozenset(
    {Outcome.HTTP_429, Outcome.HTTP_503, Outcome.CLOSE, Outcome.BAD_REQUEST}
)


def measure_pace(
    config: SimulationConfig,
    calls: Sequence[Call],
    started: float,
    monitor: Monitor,
    *,
    demand_fell: float | None,
    max_counter: int | None,
) -> Pace:
    """The pace over the worker's record of `calls` since `started` (unix time); writes the
    chart. `demand_fell` is when the backlog ran dry (unix time), `max_counter` the highest
    per-second counter the limiter kept."""
    times = sorted(call.at for call in calls)
    # Whole seconds of the clock as the origin, so that the fixed window's boundaries (whole
    # seconds of the Redis clock; the same clock for memory:// and a local Redis) fall on ticks.
    origin = math.floor(started)
    busiest, busiest_start = max_in_window(times)
    steady = steady_part(times, demand_fell)
    lags = _lags(calls)
    trace = chart = None
    if times:
        offset = started - origin
        trace = Trace(
            title=f"{config.strategy} strategy: {len(times)} calls at the worker, "
            f"MAX_CPS {config.max_cps}",
            times=tuple(at - origin for at in times),
            origin=origin,
            max_cps=config.max_cps,
            limits=tuple((offset + at, limit) for at, limit in monitor.limits),
            cpu=tuple((offset + at, health.cpu_percent) for at, health in monitor.health),
            cpu_spike=None if monitor.spiked_at is None else offset + monitor.spiked_at,
        )
        chart = write_chart(config.out / f"calls-{config.strategy}.png", trace)
    return Pace(
        worker_calls=len(times),
        placed_twice=_placed_twice(calls),
        span_seconds=times[-1] - times[0] if len(times) > 1 else 0.0,
        achieved_cps=mean_rate(times),
        max_in_any_second=busiest,
        busiest_second_start=busiest_start - origin if times else 0.0,
        max_in_second_less_jitter=max_in_window(times, WINDOW_SECONDS - JITTER_ALLOWANCE)[0],
        max_in_any_tenth=max_in_window(times, TENTH_SECONDS)[0],
        steady=None if steady is None else (steady[0] - origin, steady[1] - origin),
        steady_cps=None if steady is None else mean_trailing(times, *steady),
        max_counter=max_counter,
        lag_p50=lags[len(lags) // 2] if lags else None,
        lag_p99=lags[min(len(lags) - 1, len(lags) * 99 // 100)] if lags else None,
        chart=chart,
        trace=trace,
    )


def _placed_twice(calls: Sequence[Call]) -> int:
    placed = Counter(
        (call.body.get("campaignId"), call.body.get("contactId"), call.body.get("attempts"))
        for call in calls
        if call.body is not None and call.outcome not in NOT_PLACED
    )
    return sum(1 for count in placed.values() if count > 1)


def _lags(calls: Sequence[Call]) -> list[float]:
    """Arrival minus the epoch milliseconds that end each callId, where there are any."""
    lags = []
    for call in calls:
        stamp = (call.call_id or "").rpartition("-")[2]
        if stamp.isdigit():
            lags.append(call.at - int(stamp) / 1000.0)
    return sorted(lags)
