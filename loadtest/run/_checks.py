"""The calls that reached the worker stub, held against the limit.

Every scenario's figures at the worker are strict: exact sweeps over every arrival the stub
recorded, with no allowance and nothing left out (`max_in_window`). The dialer's checks are
these strict figures, as a carrier counts calls: no interval of 1 s over the limit, no interval
of 100 ms over a tenth of it plus two, and the limit used. The limiter scenarios are checked
against what their strategy promises, each check labelled with what it counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.reports import Verdict
from loadtest.simulate.pace import max_in_window

DIALER = "dialer"
MIN_UTILISATION = 0.98
"""The limiter scenarios: each strategy grants exactly the limit while the demand exceeds it."""
MIN_DIALER_UTILISATION = 0.95
"""The dialer: its default paced window leaves a headroom of the limit unused by design."""
BURSTS_PER_SECOND = 10
BURST_WINDOW = 1 / BURSTS_PER_SECOND
"""Seconds: the short interval a carrier may also count (no burst within a second)."""
BURST_SLACK = 2
"""Calls beyond the limit's share of a burst window: a tenth of the limit, rounded up, is the
even pace's share; two more allow its spacing to straddle the interval's edges."""
WINDOWED = ("fixed",)
"""Limiter scenarios checked per aligned second: the fixed window promises no more."""


@dataclass
class ScenarioResult:
    scenario: str
    calls: int
    utilisation: float
    max_any_second: int
    """Strict: the most arrivals in any interval of 1 s, over every arrival."""
    max_any_burst_window: int
    """Strict: the most arrivals in any interval of `BURST_WINDOW` s, over every arrival."""
    max_settled_less_jitter: int
    """After the warm-up, the most arrivals in any interval of 1 s less the jitter allowance."""
    max_aligned_second: int
    """After the warm-up, the most arrivals in one aligned second."""
    sent_max_any_second: int
    """The most calls in any interval of 1 s by the senders' own stamps: beside the arrivals,
    it tells the jitter of the senders' process from that of the hop to the stub."""
    hop_ms: dict[str, float]
    """Arrival less the sender's stamp, in ms: median, 99th percentile and most."""
    per_second: dict[int, int]


def burst_limit(limit: int) -> int:
    """The most calls any interval of `BURST_WINDOW` s may hold at ``limit`` calls per second."""
    return -(-limit // BURSTS_PER_SECOND) + BURST_SLACK


def utilisation(per_second: Counter[int], limit: int) -> float:
    """Calls over the limit's capacity in the steady part of the run: the whole seconds strictly
    between the first and the last second with calls, as the ramp-up and the stop cut those two
    short."""
    if len(per_second) < 3:
        return 0.0
    first, last = min(per_second), max(per_second)
    full = range(first + 1, last)
    return sum(per_second[s] for s in full) / (limit * len(full))


def _most(times: Sequence[float], window: float) -> int:
    return max_in_window(times, window)[0] if times else 0


def hops(times: Sequence[float], sent: Sequence[float]) -> dict[str, float]:
    """The arrival less the send stamp of each call, in ms (none when a call has no stamp)."""
    if not sent or len(sent) != len(times):
        return {}
    lags = sorted(1000 * (at - stamp) for at, stamp in zip(times, sent, strict=True))
    return {
        "p50": lags[len(lags) // 2],
        "p99": lags[min(len(lags) - 1, len(lags) * 99 // 100)],
        "max": lags[-1],
    }


def scenario_result(
    scenario: str,
    times: Sequence[float],
    limit: int,
    jitter: float,
    warmup: float = 0.0,
    sent: Sequence[float] = (),
) -> ScenarioResult:
    """The figures of one scenario from its arrival times (and, in the same order, the calls'
    send stamps); only the limiter scenarios' own checks (`max_settled_less_jitter`,
    `max_aligned_second`) leave out the warm-up."""
    ordered = sorted(times)
    per_second = Counter(math.floor(at) for at in ordered)
    settled = ordered[0] + warmup if ordered else 0.0
    checked = [at for at in ordered if at >= settled]
    return ScenarioResult(
        scenario=scenario,
        calls=len(ordered),
        utilisation=utilisation(per_second, limit),
        max_any_second=_most(ordered, 1.0),
        max_any_burst_window=_most(ordered, BURST_WINDOW),
        max_settled_less_jitter=_most(checked, 1.0 - jitter),
        max_aligned_second=max(
            (n for s, n in per_second.items() if s >= math.ceil(settled)), default=0
        ),
        sent_max_any_second=_most(sent, 1.0),
        hop_ms=hops(times, sent),
        per_second=dict(sorted(per_second.items())),
    )


def checks_for(result: ScenarioResult, limit: int, jitter: float) -> list[Verdict]:
    name = result.scenario
    reached = Verdict(name, "calls reached the worker", result.calls, 1, at_least=True)
    if name == DIALER:
        return [reached, *dialer_checks(result, limit)]
    if name in WINDOWED:
        pacing = Verdict(
            name,
            "most calls in one aligned second at the worker, after the warm-up",
            result.max_aligned_second,
            limit,
        )
    else:
        pacing = Verdict(
            name,
            f"most calls in any {1000 - jitter * 1000:g} ms at the worker, after the warm-up "
            f"(the limiter's 1 s less {jitter * 1000:g} ms allowed for arrival jitter)",
            result.max_settled_less_jitter,
            limit,
        )
    return [
        reached,
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


def dialer_checks(result: ScenarioResult, limit: int) -> list[Verdict]:
    """The carrier's view of the dialer's calls: strict, over every arrival."""
    name = result.scenario
    return [
        Verdict(
            name,
            "most calls in any interval of 1 s at the worker (strict)",
            result.max_any_second,
            limit,
        ),
        Verdict(
            name,
            f"most calls in any interval of {BURST_WINDOW * 1000:g} ms at the worker (strict)",
            result.max_any_burst_window,
            burst_limit(limit),
        ),
        Verdict(
            name,
            "utilisation of MAX_CPS over the steady part, at twice the demand",
            result.utilisation,
            MIN_DIALER_UTILISATION,
            at_least=True,
            unit="%",
        ),
    ]
