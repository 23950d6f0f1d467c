"""The targets a run's pace is held to, as a carrier counts calls, and the verdict on each.

The figures are strict, but for one that says so in its label: the busiest interval of 1 s
less `JITTER_ALLOWANCE`. Permits spaced exactly 1/limit apart put exactly `limit` of them in
every second of the Redis clock; at the worker, one call delayed a little less than the call a
limit's worth before it puts limit + 1 in one second, so any jitter on the dial path fails the
strict figure by a call. The figure with the allowance shows how much of an overrun is that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .pace import Pace

TENTH_ALLOWANCE: Final = 2
"""Calls over a tenth of the limit (rounded up) that an interval of 100 ms may hold: an even
pace already puts one more in some of them, and jitter one more again."""
JITTER_ALLOWANCE: Final = 0.02
"""The part of the second allowed for arrival jitter in the one figure labelled so."""
UTILISATION_TARGET: Final = 0.95
NO_COUNTERS: Final = "n/a (strategy keeps no cps:<ts> counters)"
NO_STEADY_PART: Final = "n/a (the run has no steady part: too short)"


def tenth_target(max_cps: int) -> int:
    """The most calls any interval of 100 ms may hold at `max_cps` calls per second."""
    return math.ceil(max_cps / 10) + TENTH_ALLOWANCE


@dataclass(frozen=True)
class Figure:
    """One figure of a run against its target: at most `target`, or at least it."""

    key: str
    """Names the figure for code: "second", "second_less_jitter", "tenth", "utilisation",
    "counters"."""
    label: str
    value: float | None
    """None when the run cannot measure it; `missing` says why."""
    target: float
    at_least: bool = False
    unit: str = "calls"
    missing: str = "n/a"

    @property
    def shortfall(self) -> float:
        """How far the value misses the target (0 when it meets it)."""
        if self.value is None:
            return 0.0
        miss = self.target - self.value if self.at_least else self.value - self.target
        return max(miss, 0.0)

    @property
    def ok(self) -> bool:
        return self.shortfall == 0.0

    @property
    def verdict(self) -> str:
        if self.value is None:
            return self.missing
        if self.ok:
            return "PASS"
        word = "UNDER" if self.at_least else "OVER"
        return f"{word} by {self.shortfall:g} ({self.shortfall / self.target:.1%})"

    def render(self) -> str:
        if self.value is None:
            return f"{self.label}: {self.missing}"
        bound = ">=" if self.at_least else "<="
        return (
            f"{self.label}: {self.value:g} {self.unit} "
            f"(target {bound} {self.target:g}) {self.verdict}"
        )


def pacing_figures(pace: Pace, max_cps: int) -> tuple[Figure, ...]:
    """The figures a carrier would check, in the order the summary prints them."""
    steady = pace.steady
    steady_label = (
        "utilisation, steady part"
        if steady is None
        else f"utilisation, steady part {steady[0]:.1f}-{steady[1]:.1f} s"
    )
    jitter_ms = round(JITTER_ALLOWANCE * 1000)
    return (
        Figure("second", "busiest 1 s (strict, any interval)", pace.max_in_any_second, max_cps),
        Figure(
            "second_less_jitter",
            f"busiest {1 - JITTER_ALLOWANCE:g} s (1 s less {jitter_ms} ms allowed for arrival "
            "jitter)",
            pace.max_in_second_less_jitter,
            max_cps,
        ),
        Figure(
            "tenth",
            "busiest 100 ms (any interval)",
            pace.max_in_any_tenth,
            tenth_target(max_cps),
        ),
        Figure(
            "utilisation",
            steady_label,
            None if pace.steady_cps is None else round(pace.steady_cps, 1),
            round(UTILISATION_TARGET * max_cps, 1),
            at_least=True,
            unit=f"calls/s ({(pace.steady_cps or 0.0) / max_cps:.1%} of {max_cps})",
            missing=NO_STEADY_PART,
        ),
        Figure(
            "counters",
            "highest cps:<ts> counter in Redis",
            pace.max_counter,
            max_cps,
            missing=NO_COUNTERS,
        ),
    )
