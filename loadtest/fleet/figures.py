"""The figures of an outage run, from the stub's arrival stamps and the counters Redis kept:
`Figures.of` measures, `Figures.render` prints. Pure functions of the run: no I/O."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from loadtest.simulate.pace import max_in_window, per_bucket
from loadtest.worker_stub import Call

from .run import OutageRun

OUTAGE_BOUND: Final = 1.25
"""The busiest 1 s while Redis is away, in MAX_CPS."""
FLOOR: Final = 0.25
"""The least rate during the outage, in MAX_CPS."""
SETTLE_SECONDS: Final = 2.0
"""From this long after Redis returns, pacing is exact: no 1 s holds more than MAX_CPS."""
UNUSED_BOUND: Final = 3
"""Permits a counter may hold beyond the calls of its second: a call stamped a few ms after
its permit's moment lands in the next second."""
AROUND: Final = (-2, 4)
"""The seconds around Redis's return shown call by call against the counter."""


def _identity(call: Call) -> tuple[object, object, object]:
    body = call.body or {}
    metadata = body.get("metadata")
    attempts = metadata.get("attempts") if isinstance(metadata, dict) else None
    return body.get("campaignId"), body.get("contactId"), attempts


def busiest(times: Sequence[float], start: float, end: float) -> int:
    """The most calls in any 1 s, swept over every arrival in [start, end)."""
    return max_in_window([at for at in times if start <= at < end])[0]


@dataclass(frozen=True)
class Second:
    """One unix second around Redis's return: the calls the worker got in it, and the
    ``cps:<ts>`` counter Redis kept for it (None: no counter, or none read)."""

    offset: int
    """Whole seconds from the second Redis returned in."""
    calls: int
    counter: int | None


@dataclass(frozen=True)
class Figures:
    label: str
    max_cps: int
    calls: int
    before: int
    """Busiest 1 s before the fault."""
    during: int
    """Busiest 1 s from a second before the fault until Redis returned."""
    returning: int
    """Busiest 1 s in the first `SETTLE_SECONDS` after the return."""
    after: int
    """Busiest 1 s from `SETTLE_SECONDS` after the return to the end."""
    outage_rate: float
    """Calls per second while Redis was away."""
    slowest_second: int
    """The fewest calls in any whole second (from the fault on) while Redis was away."""
    highest_counter: int | None
    unused: int
    """The most that a ``cps:<ts>`` counter from the return on exceeds the calls the worker
    got in its second: permits granted to requests whose callers had given up."""
    around: tuple[Second, ...]
    placed_twice: int
    """(campaignId, contactId, attempts) that reached the worker more than once."""
    skipped: int
    """Tasks the dialers skipped as duplicates: every task is unique, so each was never
    dialed (a claim that outlived its caller)."""
    outage_seconds: float
    load: tuple[float, float, float]

    @classmethod
    def of(cls, run: OutageRun) -> Figures:
        times = [call.at for call in run.calls]
        config = run.config
        settled = run.back + SETTLE_SECONDS
        away = run.back - run.fault
        during = [at for at in times if run.fault <= at < run.back]
        returned = math.floor(run.back)
        seconds = Counter(math.floor(at) for at in times)
        placed = Counter(_identity(call) for call in run.calls)
        return cls(
            label=config.label,
            max_cps=config.max_cps,
            calls=len(times),
            before=busiest(times, run.start, run.fault),
            during=busiest(times, run.fault - 1.0, run.back),
            returning=busiest(times, run.back, settled),
            after=busiest(times, settled, run.end),
            outage_rate=len(during) / away,
            slowest_second=min(per_bucket(during, run.fault, 1.0, max(math.floor(away), 1))),
            highest_counter=max(run.counters.values(), default=None),
            unused=max(
                (n - seconds[s] for s, n in run.counters.items() if s >= returned), default=0
            ),
            around=tuple(
                Second(k, seconds[returned + k], run.counters.get(returned + k))
                for k in range(*AROUND)
            ),
            placed_twice=sum(1 for n in placed.values() if n > 1),
            skipped=sum(int(counts.get("duplicates", 0)) for counts in run.containers),
            outage_seconds=away,
            load=run.load,
        )

    @property
    def failures(self) -> list[str]:
        """The issue's figures this run misses; empty when it meets them all."""
        limit = self.max_cps
        checks = [
            (self.before <= limit, f"busiest 1 s before the fault {self.before}"),
            (
                self.during <= OUTAGE_BOUND * limit,
                f"busiest 1 s while away {self.during} > {OUTAGE_BOUND:g} x limit",
            ),
            (
                self.outage_rate >= FLOOR * limit,
                f"{self.outage_rate:.1f} calls/s while away < {FLOOR:g} x limit",
            ),
            (
                self.after <= limit,
                f"busiest 1 s from {SETTLE_SECONDS:g} s after the return {self.after}",
            ),
            (
                self.highest_counter is None or self.highest_counter <= limit,
                f"a cps:<ts> counter reached {self.highest_counter}",
            ),
            (self.unused <= UNUSED_BOUND, f"{self.unused} permits granted and not dialed"),
            (not self.placed_twice, f"{self.placed_twice} tasks placed twice"),
        ]
        return [message for met, message in checks if not met]

    def render(self) -> str:
        missed = self.failures
        load = " ".join(f"{x:.2f}" for x in self.load)
        return "\n".join(
            [
                f"{self.label}: MAX_CPS {self.max_cps}, {self.calls} calls, Redis away "
                f"{self.outage_seconds:.1f} s, load {load}",
                f"  busiest 1 s: before {self.before}, while away {self.during}, first "
                f"{SETTLE_SECONDS:g} s back {self.returning}, after {self.after}",
                f"  while away: {self.outage_rate:.1f} calls/s, slowest second "
                f"{self.slowest_second}",
                f"  highest cps:<ts> {self.highest_counter}, unused permits {self.unused}; "
                f"placed twice {self.placed_twice}, skipped as duplicates {self.skipped}",
                "  around the return (second: worker calls / counter): "
                + ", ".join(f"{s.offset:+d}: {s.calls}/{s.counter}" for s in self.around),
                "  " + ("MEETS every figure" if not missed else "MISSES: " + "; ".join(missed)),
            ]
        )
