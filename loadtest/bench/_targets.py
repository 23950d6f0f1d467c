"""The issue's targets: which figure of which comparison must reach or stay under what."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from loadtest._tasks import BATCH
from loadtest.reports import Verdict

from ._contenders import DIALER, OURS
from ._main import main_name
from ._measure import Comparison


@dataclass(frozen=True)
class Target:
    comparison: str
    """The key of the comparison the figure comes from; no comparison, no verdict."""
    text: str
    figure: Callable[[Comparison], float]
    threshold: float
    at_least: bool
    unit: str = "x"

    def verdict(self, comparison: Comparison) -> Verdict:
        return Verdict(
            self.comparison,
            self.text,
            self.figure(comparison),
            self.threshold,
            self.at_least,
            self.unit,
        )


def ratio(
    comparison: str, contender: str, reference: str, threshold: float, *, at_least: bool
) -> Target:
    """``contender``'s figure over ``reference``'s, round by round."""
    return Target(
        comparison,
        f"{contender} against {reference}",
        lambda c: c.ratio(contender, reference),
        threshold,
        at_least,
    )


def slowdown(comparison: str, label: str, threshold: float) -> Target:
    """How much slower the traced contender (the second) runs than the baseline, as a fraction."""
    return Target(
        comparison,
        f"{label}: slowdown against no telemetry",
        lambda c: 1 / c.ratio(c.contenders[1].name) - 1,
        threshold,
        at_least=False,
        unit="%",
    )


def above_floor(comparison: str, label: str, threshold: float) -> Target:
    """How much more the traced contender (the second) slows a decision than the bare span (the
    third) does in the same run, in points of slowdown against the baseline."""

    def points(c: Comparison) -> float:
        traced, floor = c.contenders[1].name, c.contenders[2].name
        return 1 / c.ratio(traced) - 1 / c.ratio(floor)

    return Target(
        comparison,
        f"{label}: slowdown above a bare span's",
        points,
        threshold,
        at_least=False,
        unit="%",
    )


SERVER_TARGETS = (
    ("cps_limiter FixedWindow", "limits FixedWindow", 1.15),
    ("cps_limiter TokenBucket", "limits FixedWindow", 1.2),
    ("cps_limiter SlidingWindow", "limits MovingWindow", 1.0),
    (DIALER, "limits FixedWindow", 1.5),
)
"""Redis CPU per decision, ours over `limits`': held on both the INFO cpu and the
commandstats figures."""
AGAINST_MAIN = (*OURS, DIALER)
"""Each of these no slower on the server than main's scripts in the same run."""

TARGETS = (
    ratio("single", "cps_limiter FixedWindow", "limits FixedWindow", 1.05, at_least=True),
    ratio("single", "cps_limiter TokenBucket", "limits FixedWindow", 1.05, at_least=True),
    ratio("single", "cps_limiter SlidingWindow", "limits MovingWindow", 1.05, at_least=True),
    ratio("single", "cps_limiter FixedWindow", "PING (one round trip)", 0.8, at_least=True),
    *(
        ratio(key, ours, theirs, threshold, at_least=False)
        for key in ("cpu", "commandstats")
        for ours, theirs, threshold in SERVER_TARGETS
    ),
    *(
        ratio(key, name, main_name(name), 1.0, at_least=False)
        for key in ("cpu", "commandstats")
        for name in AGAINST_MAIN
    ),
    ratio("saturation", "cps_limiter FixedWindow", "limits FixedWindow", 1.0, at_least=True),
    ratio(
        "batch",
        "cps_limiter FixedWindow acquire(permits=10)",
        "limits FixedWindow, 10 hits",
        7.0,
        at_least=True,
    ),
    *(
        ratio("deny", f"{name}, deny cache on", f"{name}, deny cache off", 20.0, at_least=True)
        for name in ("FixedWindow", "SlidingWindow", "TokenBucket")
    ),
    slowdown("tracing-batch", "OpenTelemetry SDK with a BatchSpanProcessor", 0.20),
    above_floor("tracing-batch", "OpenTelemetry SDK with a BatchSpanProcessor", 0.10),
    slowdown("tracing-none", "OpenTelemetry API with no SDK", 0.03),
    ratio("dialer", f"batch of {BATCH}", "one dial (batch of 1)", 1.5, at_least=False),
    ratio("import", "import dialer_lambda.handler", "import redis, httpx", 1.5, at_least=False),
    Target(
        "rss",
        f"peak RSS of a process that handled a batch of {BATCH}",
        lambda c: c.median("handler process"),
        80.0,
        at_least=False,
        unit="MB",
    ),
)


def verdicts(comparisons: Mapping[str, Comparison]) -> list[Verdict]:
    """The verdicts on the targets whose comparison ran."""
    return [t.verdict(comparisons[t.comparison]) for t in TARGETS if t.comparison in comparisons]
