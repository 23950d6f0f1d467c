"""The chart of a run: calls per 100 ms and calls in the trailing second against the limit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .pace import WINDOW_SECONDS, max_in_window, per_bucket, trailing_series

CHART_BUCKET_SECONDS: Final = 0.1


def write_chart(
    path: Path,
    *,
    times: Sequence[float],
    origin: float,
    max_cps: int,
    title: str,
    limits: Sequence[tuple[float, float]] = (),
    cpu: Sequence[tuple[float, float]] = (),
    cpu_spike: float | None = None,
) -> Path:
    """A PNG: calls per 100 ms (top) and calls in the trailing second (bottom) against the
    limit. `limits` and `cpu` are (seconds since `origin`, value) samples, drawn when given."""
    # The object API on the Agg canvas: no pyplot, no global backend, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = [at - origin for at in sorted(times)]
    buckets = math.floor(ordered[-1] / CHART_BUCKET_SECONDS) + 1
    counts = per_bucket(ordered, 0.0, CHART_BUCKET_SECONDS, buckets)
    edges = [n * CHART_BUCKET_SECONDS for n in range(buckets + 1)]
    moments, trailing = trailing_series(ordered)
    busiest, busiest_start = max_in_window(ordered)
    bucket_limit = max_cps * CHART_BUCKET_SECONDS

    figure = Figure(figsize=(12, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    figure.suptitle(title)

    top.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.7, label="calls per 100 ms")
    top.axvspan(
        busiest_start,
        busiest_start + WINDOW_SECONDS,
        color="orange",
        alpha=0.25,
        label=f"busiest 1 s: {busiest} calls",
    )
    top.annotate(
        f"busiest 1 s: {busiest} calls (limit {max_cps})",
        xy=(busiest_start + WINDOW_SECONDS / 2, max(counts)),
        xytext=(0, 6),
        textcoords="offset points",
        ha="center",
        fontsize=9,
    )
    top.set_ylabel("calls per 100 ms")
    top.set_ylim(0, max(max(counts), bucket_limit) * 1.25)

    bottom.step(
        moments,
        trailing,
        where="post",
        color="tab:purple",
        linewidth=1,
        label="calls in the last 1 s",
    )
    bottom.set_ylabel("calls in the last 1 s")
    bottom.set_xlabel(f"seconds since {datetime.fromtimestamp(origin, UTC):%H:%M:%S} UTC")
    bottom.set_ylim(0, max(busiest, max_cps) * 1.2)

    for axis, scale, unit in ((top, CHART_BUCKET_SECONDS, "per 100 ms"), (bottom, 1.0, "/s")):
        if limits:
            axis.step(
                [at for at, _ in limits],
                [value * scale for _, value in limits],
                where="post",
                color="red",
                label=f"limit in force {unit}",
            )
        else:
            axis.axhline(
                max_cps * scale,
                color="red",
                linestyle="--",
                label=f"limit {max_cps * scale:g} {unit}",
            )
        if cpu_spike is not None:
            axis.axvline(cpu_spike, color="black", linestyle=":", label="worker CPU raised")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    if cpu and len({value for _, value in cpu}) > 1:
        cpu_axis = bottom.twinx()
        cpu_axis.step(
            [at for at, _ in cpu],
            [value for _, value in cpu],
            where="post",
            color="tab:gray",
            linewidth=1,
            label="worker CPU %",
        )
        cpu_axis.set_ylim(0, 100)
        cpu_axis.set_ylabel("worker CPU %")
        cpu_axis.legend(loc="center right", fontsize=8)

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
