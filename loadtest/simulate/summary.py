"""What a run did: `Summary`, and how it reads as text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.worker_stub.carrier import CarrierLimit

from .carrier import CarrierFigures
from .config import StrategyName
from .pace import Pace
from .targets import Figure, pacing_figures


@dataclass(frozen=True)
class Summary:
    """What a run did; `ok` when every task is accounted for and nobody was called twice."""

    strategy: StrategyName
    max_cps: int
    tasks: int
    concurrency: int
    batch_size: int
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
    counter_stalls: int = 0
    """Reads of the cps counters that came too late to be sure of catching every second."""
    campaign_peaks: Mapping[str, int] = field(default_factory=dict)
    """With lasting calls: each campaign's most calls in progress at the worker."""
    campaign_limit: int | None = None
    campaign_chart: Path | None = None
    carrier: CarrierLimit | None = None
    carrier_figures: CarrierFigures | None = None

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letter_reasons.values())

    @property
    def accounted_for(self) -> bool:
        return self.settled + self.dead_lettered == self.tasks

    @property
    def ok(self) -> bool:
        return self.accounted_for and (self.pace is None or self.pace.placed_twice == 0)

    @property
    def pacing(self) -> tuple[Figure, ...]:
        """The pace against a carrier's targets; empty when the worker keeps no record."""
        return () if self.pace is None else pacing_figures(self.pace, self.max_cps)

    @property
    def paced_within_targets(self) -> bool:
        return bool(self.pacing) and all(figure.ok for figure in self.pacing)

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
        if self.campaign_peaks:
            held = ", ".join(f"{c} {n}" for c, n in self.campaign_peaks.items())
            lines.append(
                f"  calls in progress, peak per campaign (limit {self.campaign_limit}): {held}"
                + (f"; chart {self.campaign_chart}" if self.campaign_chart else "")
            )
        demand = self.concurrency * self.batch_size
        lines.append(
            f"  demand: {self.concurrency} invocations x {self.batch_size} tasks = {demand} "
            f"permits asked at once ({demand / self.max_cps:.1f}x MAX_CPS)"
        )
        if self.pace is None:
            lines.append("  pace: not measured (the worker does not serve GET /_calls)")
        else:
            pace = self.pace
            lines += [
                f"  worker: {pace.worker_calls} calls over {pace.span_seconds:.1f} s "
                f"({pace.achieved_cps:.1f}/s), {pace.placed_twice} tasks called twice",
                f"  pace at the worker, swept over every arrival (MAX_CPS {self.max_cps}):",
                *(f"    {figure.render()}" for figure in self.pacing),
            ]
            if self.counter_stalls and pace.max_counter is not None:
                lines.append(
                    f"    (the counters were read late {self.counter_stalls}x: "
                    "some seconds may be missing)"
                )
            if pace.lag_p50 is not None and pace.lag_p99 is not None:
                lines.append(
                    f"  dial path: {pace.lag_p50 * 1000:.0f} ms from callId stamp to the worker "
                    f"(median), {pace.lag_p99 * 1000:.0f} ms (99th percentile)"
                )
        if self.carrier is not None and self.carrier_figures is not None:
            lines += self.carrier_figures.render(self.carrier)
        written = [str(p) for p in (self.pace.chart if self.pace else None, self.handler_log) if p]
        lines.append(f"  written: {', '.join(written)}")
        return "\n".join(lines)


def changes_of(samples: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """The (moment, value) samples that start a new value: the first, and each change."""
    changes: list[tuple[float, float]] = []
    for at, value in samples:
        if not changes or changes[-1][1] != value:
            changes.append((at, value))
    return tuple(changes)
