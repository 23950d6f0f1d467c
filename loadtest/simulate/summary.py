"""What a run did: `Summary`, and the pace measured over the worker's record of calls."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.worker_stub import Call, Outcome

from .chart import write_chart
from .config import SimulationConfig, StrategyName
from .monitor import Monitor
from .pace import Pace, max_in_window, mean_rate

# Outcomes of a request that surely placed no call at the worker.
NOT_PLACED: Final = frozenset(
    {Outcome.HTTP_429, Outcome.HTTP_503, Outcome.CLOSE, Outcome.BAD_REQUEST}
)


@dataclass(frozen=True)
class Summary:
    """What a run did; `ok` when every task is accounted for and nobody was called twice."""

    strategy: StrategyName
    max_cps: int
    tasks: int
    invocations: int
    invocation_errors: int
    deliveries: int
    successful: int
    failed: int
    rate_limited: int
    duplicates: int
    settled: int
    dead_letter_reasons: Mapping[str, int]
    redeliveries: int
    redelivered_tasks: int
    duplicate_deliveries: int
    redis_unavailable: int
    """Decisions and claims made without Redis (fail-open), from the handler's metrics."""
    limit_changes: tuple[tuple[float, float], ...]
    """(seconds into the run, limit in force) at the start and at each change."""
    cpu_spiked_at: float | None
    wall_seconds: float
    pace: Pace | None
    handler_log: Path

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letter_reasons.values())

    @property
    def accounted_for(self) -> bool:
        return self.settled + self.dead_lettered == self.tasks

    @property
    def ok(self) -> bool:
        return self.accounted_for and (self.pace is None or self.pace.placed_twice == 0)

    def render(self) -> str:
        raised = f", {self.invocation_errors} raised" if self.invocation_errors else ""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.dead_letter_reasons.items()))
        lines = [
            f"Simulated campaign: {self.tasks} tasks, strategy {self.strategy}, "
            f"MAX_CPS {self.max_cps}, {self.wall_seconds:.1f} s",
            f"  outcomes: successful {self.successful}, failed {self.failed}, "
            f"rateLimited {self.rate_limited}, duplicates {self.duplicates}  "
            f"({self.deliveries} deliveries, {self.invocations} invocations{raised})",
            f"  tasks: {self.settled} done + {self.dead_lettered} dead-lettered"
            + (f" ({reasons})" if reasons else "")
            + (" = all" if self.accounted_for else f" of {self.tasks}: NOT ALL ACCOUNTED FOR"),
            f"  redeliveries: {self.redeliveries} of {self.redelivered_tasks} tasks sent back, "
            f"{self.duplicate_deliveries} duplicate deliveries"
            + (f"; Redis unavailable {self.redis_unavailable}x" if self.redis_unavailable else ""),
        ]
        if len(self.limit_changes) > 1:
            steps = ", ".join(f"{limit:g}/s from {at:.1f} s" for at, limit in self.limit_changes)
            spike = (
                f" (worker CPU raised at {self.cpu_spiked_at:.1f} s)"
                if self.cpu_spiked_at is not None
                else ""
            )
            lines.append(f"  limit in force: {steps}{spike}")
        if self.pace is None:
            lines.append("  pace: not measured (the worker does not serve GET /_calls)")
        else:
            pace = self.pace
            verdict = "within" if pace.max_in_any_second <= self.max_cps else "OVER"
            lines += [
                f"  worker: {pace.worker_calls} calls, {pace.placed_twice} tasks called twice",
                f"  pace: {pace.achieved_cps:.1f} calls/s over {pace.span_seconds:.1f} s "
                f"against a limit of {self.max_cps}/s; busiest 1 s: "
                f"{pace.max_in_any_second} calls ({verdict} the limit)",
            ]
            if pace.lag_p50 is not None and pace.lag_p99 is not None:
                lines.append(
                    f"  dial path: {pace.lag_p50 * 1000:.0f} ms from callId stamp to the worker "
                    f"(median), {pace.lag_p99 * 1000:.0f} ms (99th percentile)"
                )
        written = [str(p) for p in (self.pace.chart if self.pace else None, self.handler_log) if p]
        lines.append(f"  written: {', '.join(written)}")
        return "\n".join(lines)


def _placed_twice(calls: Sequence[Call]) -> int:
    placed = Counter(
        (call.body.get("campaignId"), call.body.get("contactId"), call.body.get("attempts"))
        for call in calls
        if call.body is not None and call.outcome not in NOT_PLACED
    )
    return sum(1 for count in placed.values() if count > 1)


def changes_of(samples: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """The (moment, value) samples that start a new value: the first, and each change."""
    changes: list[tuple[float, float]] = []
    for at, value in samples:
        if not changes or changes[-1][1] != value:
            changes.append((at, value))
    return tuple(changes)


def _lags(calls: Sequence[Call]) -> list[float]:
    """Arrival minus the epoch milliseconds that end each callId, where there are any."""
    lags = []
    for call in calls:
        stamp = (call.call_id or "").rpartition("-")[2]
        if stamp.isdigit():
            lags.append(call.at - int(stamp) / 1000.0)
    return sorted(lags)


def measure_pace(
    config: SimulationConfig, calls: Sequence[Call], started: float, monitor: Monitor
) -> Pace:
    """The pace over the worker's record of `calls` since `started`; writes the chart."""
    times = sorted(call.at for call in calls)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    # Whole seconds of the clock as the origin, so that the fixed window's boundaries (whole
    # seconds of the Redis clock; the same clock for memory:// and a local Redis) fall on ticks.
    origin = math.floor(started)
    busiest, busiest_start = max_in_window(times)
    lags = _lags(calls)
    chart = None
    if times:
        offset = started - origin
        chart = write_chart(
            config.out / f"calls-{config.strategy}.png",
            times=times,
            origin=origin,
            max_cps=config.max_cps,
            title=f"{config.strategy} strategy: {len(times)} calls at the worker, "
            f"MAX_CPS {config.max_cps}",
            limits=[(offset + at, limit) for at, limit in monitor.limits],
            cpu=[(offset + at, health.cpu_percent) for at, health in monitor.health],
            cpu_spike=None if monitor.spiked_at is None else offset + monitor.spiked_at,
        )
    return Pace(
        worker_calls=len(times),
        placed_twice=_placed_twice(calls),
        span_seconds=span,
        achieved_cps=mean_rate(times),
        lag_p50=lags[len(lags) // 2] if lags else None,
        lag_p99=lags[min(len(lags) - 1, len(lags) * 99 // 100)] if lags else None,
        max_in_any_second=busiest,
        busiest_second_start=busiest_start - origin if times else 0.0,
        chart=chart,
    )
