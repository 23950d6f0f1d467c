"""The calls that reached the worker stub, held against the limit: per scenario, the most calls
in a second (any interval, or an aligned window) and the utilisation of the limit."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.reports import Verdict
from loadtest.simulate import max_in_window

MIN_UTILISATION = 0.98
WINDOWED = ("fixed", "dialer")
"""Scenarios paced by the fixed window: checked per aligned second."""


@dataclass
class ScenarioResult:
    scenario: str
    calls: int
    utilisation: float
    max_any_second: int
    max_any_second_less_jitter: int
    max_aligned_second: int
    per_second: dict[int, int]


def utilisation(per_second: Counter[int], limit: int) -> float:
    """Calls over the limit's capacity in the whole seconds strictly between the first and the
    last second with calls: the run's ramp-up and stop cut those two short."""
    if len(per_second) < 3:
        return 0.0
    first, last = min(per_second), max(per_second)
    full = range(first + 1, last)
    return sum(per_second[s] for s in full) / (limit * len(full))


def scenario_result(
    scenario: str, times: Sequence[float], limit: int, jitter: float, warmup: float = 0.0
) -> ScenarioResult:
    """The figures of one scenario; the pacing ones count the calls after the warm-up only (and
    whole seconds only, for the aligned ones)."""
    per_second = Counter(math.floor(at) for at in times)
    settled = times[0] + warmup if times else 0.0
    checked = [at for at in times if at >= settled]
    return ScenarioResult(
        scenario=scenario,
        calls=len(times),
        utilisation=utilisation(per_second, limit),
        max_any_second=max_in_window(checked)[0] if checked else 0,
        max_any_second_less_jitter=max_in_window(checked, 1.0 - jitter)[0] if checked else 0,
        max_aligned_second=max(
            (n for s, n in per_second.items() if s >= math.ceil(settled)), default=0
        ),
        per_second=dict(sorted(per_second.items())),
    )


def checks_for(result: ScenarioResult, limit: int, jitter: float) -> list[Verdict]:
    name = result.scenario
    if name in WINDOWED:
        pacing = Verdict(
            name, "most calls in one window (aligned second)", result.max_aligned_second, limit
        )
    else:
        pacing = Verdict(
            name,
            f"most calls in any interval of 1 s (less {jitter * 1000:g} ms jitter)",
            result.max_any_second_less_jitter,
            limit,
        )
    return [
        Verdict(name, "calls reached the worker", result.calls, 1, at_least=True),
        pacing,
        Verdict(
            name,
            "utilisation of the limit at twice the demand",
            result.utilisation,
            MIN_UTILISATION,
            at_least=True,
            unit="%",
        ),
    ]
