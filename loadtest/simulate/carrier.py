"""The carrier in the simulation: its limit goes to the stub (``--carrier-limit``), the stub's
refusals go to the handler's limiter, and what came of them is measured and charted.

The stub runs in a process of its own and the handler's Redis may be ``memory://``, which the
stub cannot reach: the health agent relays the refusals instead, with the worker's own command
(`Limiter.report_refused`: ``HINCRBY <prefix>:adaptive refused n``), as it relays the health.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cps_limiter import Limiter
from loadtest.worker_stub import Call, StubHealth
from loadtest.worker_stub.carrier import DEFAULT_CARRIER_WINDOW, CarrierLimit, parse_change

SETTLE_SECONDS: Final = 10.0
"""Refusals and the carrier's use are measured from this far past the first call."""
RECOVERY_SHARE: Final = 0.95
"""After the carrier's limit rises, recovered means this share of the new limit in 1 s."""
RECOVERY_TARGET_SECONDS: Final = 30.0
REFUSED_TARGET: Final = 0.02
USED_TARGET: Final = 0.90


def add_carrier_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--carrier-limit", type=int, default=None, help="the stub's carrier: calls a second")
    add("--carrier-window", type=float, default=DEFAULT_CARRIER_WINDOW, help="seconds it counts")
    add(
        "--carrier-limit-after",
        type=parse_change,
        action="append",
        default=[],
        metavar="SECONDS:LIMIT",
        help="the carrier's limit from SECONDS after the first call (repeatable)",
    )


def carrier_of(args: argparse.Namespace) -> CarrierLimit | None:
    if args.carrier_limit is None:
        return None
    return CarrierLimit(args.carrier_limit, args.carrier_window, tuple(args.carrier_limit_after))


def stub_arguments(carrier: CarrierLimit | None) -> list[str]:
    """The stub's command line for ``carrier``."""
    if carrier is None:
        return []
    arguments = ["--carrier-limit", str(carrier.limit), "--carrier-window", repr(carrier.window)]
    for at, limit in carrier.changes:
        arguments += ["--carrier-limit-after", f"{at!r}:{limit}"]
    return arguments


def refusal_relay(limiter: Limiter) -> Callable[[StubHealth], None]:
    """Reports to ``limiter`` the refusals each health sample shows that the last did not."""
    seen = 0

    def relay(health: StubHealth) -> None:
        nonlocal seen
        if health.refused > seen:
            limiter.report_refused(health.refused - seen)
            seen = health.refused

    return relay


@dataclass(frozen=True)
class CarrierFigures:
    settled_refused: float
    """Refused share of the calls from SETTLE_SECONDS to the first change (or the end)."""
    settled_used: float
    """Calls the carrier took over that span, as a share of what its limit allowed."""
    span: tuple[float, float]
    recovered_after: float | None
    """Seconds from the first change until 1 s held RECOVERY_SHARE of the new limit."""
    chart: Path | None

    def render(self, carrier: CarrierLimit) -> list[str]:
        start, end = self.span
        lines = [
            f"  carrier: {carrier.limit}/s over {carrier.window:g} s"
            + "".join(f", {limit}/s from {at:g} s" for at, limit in carrier.changes),
            f"    from {start:.0f} s to {end:.0f} s: refused {self.settled_refused:.2%} of calls "
            f"(target < {REFUSED_TARGET:.0%}), carrier's limit used {self.settled_used:.1%} "
            f"(target >= {USED_TARGET:.0%})",
        ]
        if carrier.changes:
            after = "never" if self.recovered_after is None else f"{self.recovered_after:.1f} s"
            target = math.ceil(RECOVERY_SHARE * carrier.changes[0][1])
            lines.append(
                f"    after the limit changed: {target} calls in 1 s again after {after} "
                f"(target <= {RECOVERY_TARGET_SECONDS:g} s)"
            )
        if self.chart is not None:
            lines.append(f"    chart: {self.chart}")
        return lines


def carrier_figures(
    carrier: CarrierLimit,
    calls: Sequence[Call],
    limits: Sequence[tuple[float, float]],
    started: float,
    chart: Path | None,
) -> CarrierFigures | None:
    """The figures over the placed ``calls``; moments from the first call, as the carrier
    counts its changes. ``limits`` are (seconds after ``started``, limit in force)."""
    placed = sorted((call.at, call.refused) for call in calls if call.placed)
    if not placed:
        return None
    first = placed[0][0]
    times = [at - first for at, _ in placed]
    refused = [at - first for at, was in placed if was]
    end = times[-1]
    change = carrier.changes[0][0] if carrier.changes else end
    start, stop = SETTLE_SECONDS, min(change, end)
    inside = sum(start <= t < stop for t in times)
    refused_inside = sum(start <= t < stop for t in refused)
    allowed = carrier.limit * max(stop - start, 1e-9)
    recovered = None
    if carrier.changes:
        recovered = _first_second_reaching(
            times, change, math.ceil(RECOVERY_SHARE * carrier.changes[0][1])
        )
    if chart is not None:
        shifted = [(started + at - first, limit) for at, limit in limits]
        chart = draw_carrier(chart, carrier, times, refused, shifted)
    return CarrierFigures(
        settled_refused=refused_inside / inside if inside else 0.0,
        settled_used=(inside - refused_inside) / allowed,
        span=(start, stop),
        recovered_after=None if recovered is None else recovered - change,
        chart=chart,
    )


def _first_second_reaching(times: Sequence[float], since: float, count: int) -> float | None:
    """The first moment from ``since`` ending a 1-s interval that holds ``count`` calls."""
    low = 0
    for high, at in enumerate(times):
        while times[low] <= at - 1.0:
            low += 1
        if at >= since and high - low + 1 >= count:
            return at
    return None


def draw_carrier(
    path: Path,
    carrier: CarrierLimit,
    times: Sequence[float],
    refused: Sequence[float],
    limits: Sequence[tuple[float, float]],
) -> Path:
    """Calls and refusals per second, the limit in force and the carrier's limit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seconds = math.floor(times[-1]) + 1
    taken = [0] * seconds
    lost = [0] * seconds
    for at in times:
        taken[int(at)] += 1
    for at in refused:
        taken[int(at)] -= 1
        lost[int(at)] += 1
    edges = list(range(seconds + 1))
    figure = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    axis.stairs(taken, edges, fill=True, color="tab:green", alpha=0.6, label="calls taken /s")
    axis.stairs(
        [t + r for t, r in zip(taken, lost, strict=True)],
        edges,
        baseline=taken,
        fill=True,
        color="tab:red",
        alpha=0.8,
        label="calls refused /s",
    )
    axis.step(
        [at for at, _ in limits],
        [value for _, value in limits],
        where="post",
        color="black",
        label="limit in force (AIMD cap)",
    )
    moments = [0.0, *(at for at, _ in carrier.changes), float(seconds)]
    values = [carrier.limit, *(limit for _, limit in carrier.changes)]
    axis.stairs(values, moments, color="tab:orange", linestyle="--", label="carrier's limit")
    axis.set_xlabel("seconds since the first call")
    axis.set_ylabel("calls per second")
    changes = "".join(f", {limit}/s from {at:g} s" for at, limit in carrier.changes)
    axis.set_title(
        f"The carrier's refusals lower the pace (AIMD): a carrier of {carrier.limit}/s "
        f"over {carrier.window:g} s{changes}"
    )
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
