"""The chart of a run: calls per 100 ms and calls in the trailing second at the worker, against
the limit and the 100-ms target; one run per image, or several side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from .pace import TENTH_SECONDS, WINDOW_SECONDS, max_in_window, per_bucket, trailing_series
from .targets import tenth_target

CHART_DPI: Final = 100
SINGLE_SIZE: Final = (12, 7)
COLUMN_WIDTH: Final = 8
HEADROOM: Final = 1.25


@dataclass(frozen=True)
class Trace:
    """What the chart of one run draws; moments in seconds since `origin` (unix time)."""

    title: str
    times: tuple[float, ...]
    """The arrivals at the worker, in order."""
    origin: float
    max_cps: int
    limits: tuple[tuple[float, float], ...] = ()
    """(moment, limit in force) samples; drawn instead of a flat limit when given."""
    cpu: tuple[tuple[float, float], ...] = ()
    cpu_spike: float | None = None

    @property
    def tenths(self) -> tuple[list[int], list[float]]:
        """Calls per 100 ms bucket, and the buckets' edges."""
        buckets = math.floor(self.times[-1] / TENTH_SECONDS) + 1 if self.times else 1
        edges = [n * TENTH_SECONDS for n in range(buckets + 1)]
        return per_bucket(self.times, 0.0, TENTH_SECONDS, buckets), edges


def write_chart(path: Path, trace: Trace) -> Path:
    """A PNG of one run: calls per 100 ms (top) and calls in the trailing second (bottom)."""
    figure, axes = _figure(SINGLE_SIZE, 1)
    figure.suptitle(trace.title)
    top, bottom = axes[0]
    draw_tenths(top, trace)
    draw_trailing(bottom, trace)
    return _save(figure, path)


def write_side_by_side(path: Path, traces: Sequence[Trace], title: str) -> Path:
    """A PNG of several runs in columns, on the same scales, so that their shapes compare."""
    figure, axes = _figure((COLUMN_WIDTH * len(traces), SINGLE_SIZE[1]), len(traces))
    figure.suptitle(title)
    tenth_top = max(_tenth_top(trace) for trace in traces)
    second_top = max(_second_top(trace) for trace in traces)
    span = max((trace.times[-1] for trace in traces if trace.times), default=1.0)
    for (top, bottom), trace in zip(axes, traces, strict=True):
        top.set_title(trace.title, fontsize=10)
        draw_tenths(top, trace, tenth_top)
        draw_trailing(bottom, trace, second_top)
        top.set_xlim(0, span + WINDOW_SECONDS)
    return _save(figure, path)


def draw_tenths(axis: Any, trace: Trace, top: float | None = None) -> None:
    """Calls per 100 ms, the busiest 100 ms (any interval), the target and the limit."""
    counts, edges = trace.tenths
    busiest, start = max_in_window(trace.times, TENTH_SECONDS)
    target = tenth_target(trace.max_cps)
    axis.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.7, label="calls per 100 ms")
    axis.axhline(
        target, color="darkorange", linestyle="--", label=f"target: at most {target} per 100 ms"
    )
    axis.axvspan(
        start,
        start + TENTH_SECONDS,
        color="orange",
        alpha=0.5,
        label=f"busiest 100 ms: {busiest} calls",
    )
    axis.set_ylabel("calls per 100 ms")
    axis.set_ylim(0, top or _tenth_top(trace))
    _limit(axis, trace, TENTH_SECONDS, "per 100 ms")


def draw_trailing(axis: Any, trace: Trace, top: float | None = None) -> None:
    """Calls in the trailing second, the busiest second (any interval) and the limit."""
    moments, trailing = trailing_series(trace.times)
    busiest, start = max_in_window(trace.times)
    axis.step(
        moments, trailing, where="post", color="tab:purple", linewidth=1, label="calls in last 1 s"
    )
    axis.axvspan(
        start,
        start + WINDOW_SECONDS,
        color="orange",
        alpha=0.25,
        label=f"busiest 1 s: {busiest} calls (limit {trace.max_cps})",
    )
    axis.set_ylabel("calls in the last 1 s")
    axis.set_xlabel(f"seconds since {datetime.fromtimestamp(trace.origin, UTC):%H:%M:%S} UTC")
    axis.set_ylim(0, top or _second_top(trace))
    _limit(axis, trace, 1.0, "/s")
    if trace.cpu and len({value for _, value in trace.cpu}) > 1:
        cpu_axis = axis.twinx()
        cpu_axis.step(
            [at for at, _ in trace.cpu],
            [value for _, value in trace.cpu],
            where="post",
            color="tab:gray",
            linewidth=1,
            label="worker CPU %",
        )
        cpu_axis.set_ylim(0, 100)
        cpu_axis.set_ylabel("worker CPU %")
        cpu_axis.legend(loc="center right", fontsize=8)


def _limit(axis: Any, trace: Trace, scale: float, unit: str) -> None:
    if trace.limits:
        axis.step(
            [at for at, _ in trace.limits],
            [value * scale for _, value in trace.limits],
            where="post",
            color="red",
            label=f"limit in force {unit}",
        )
    else:
        limit = trace.max_cps * scale
        axis.axhline(limit, color="red", linestyle="-", label=f"limit {limit:g} {unit}")
    if trace.cpu_spike is not None:
        axis.axvline(trace.cpu_spike, color="black", linestyle=":", label="worker CPU raised")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right", fontsize=8)


def _tenth_top(trace: Trace) -> float:
    counts, _ = trace.tenths
    return max([*counts, tenth_target(trace.max_cps)]) * HEADROOM


def _second_top(trace: Trace) -> float:
    return max(max_in_window(trace.times)[0], trace.max_cps) * HEADROOM


def _figure(size: tuple[float, float], columns: int) -> tuple[Any, list[tuple[Any, Any]]]:
    # The object API on the Agg canvas: no pyplot, no global backend, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, columns, sharex="col", height_ratios=(3, 2), squeeze=False)
    return figure, [(grid[0][n], grid[1][n]) for n in range(columns)]


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=CHART_DPI)
    return path
