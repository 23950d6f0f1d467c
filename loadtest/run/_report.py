"""The load test's report: a chart of the calls per second against the limit, and the figures
and checks as markdown."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtest.reports import Verdict, verdict_table
from loadtest.simulate import trailing_series

from ._checks import ScenarioResult
from ._monitor import RedisMonitor


def write_chart(path: Path, times: Mapping[str, list[float]], limit: int, origin: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in times if times[s]]
    figure, axes = plt.subplots(
        len(scenarios), 1, figsize=(10, 2.4 * len(scenarios) + 0.6), sharex=True, squeeze=False
    )
    for axis, scenario in zip(axes[:, 0], scenarios, strict=True):
        relative = [at - origin for at in times[scenario]]
        per_second = Counter(math.floor(at) for at in relative)
        seconds = sorted(per_second)
        axis.bar(
            seconds,
            [per_second[s] for s in seconds],
            width=1.0,
            align="edge",
            alpha=0.35,
            label="calls per aligned second",
        )
        moments, values = trailing_series(relative)
        axis.step(moments, values, where="post", linewidth=0.8, label="calls in the last 1 s")
        axis.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"limit {limit}/s")
        axis.set_ylabel("calls")
        axis.set_title(f"{scenario}: {len(relative)} calls at the worker stub", fontsize=10)
        axis.set_ylim(0, max(limit * 2.2, max(values, default=0) * 1.1))
        axis.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the start of the run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(
    results: Mapping[str, ScenarioResult],
    checks: Sequence[Verdict],
    monitor: RedisMonitor,
    args: argparse.Namespace,
) -> str:
    lines = [
        f"Locust, {args.duration:g} s, {args.processes} processes; limit {args.limit} calls/s per "
        f"scenario, demand {args.demand:g}x the limit; worker stub answering in "
        f"{args.worker_delay_ms:g} ms. The pacing figures leave out each scenario's first "
        f"{args.warmup:g} s (warm-up); jitter allowance {args.jitter * 1000:g} ms.",
        "",
        "| scenario | calls | utilisation | most in any 1 s | most in any 1 s less jitter "
        "| most in an aligned second |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results.values():
        lines.append(
            f"| {result.scenario} | {result.calls} | {result.utilisation:.1%} | "
            f"{result.max_any_second} | {result.max_any_second_less_jitter} | "
            f"{result.max_aligned_second} |"
        )
    lines += [
        "",
        f"Redis, {monitor.samples} samples: fixed-window counters at most "
        f"{monitor.fixed_max or {}}; sliding-window log at most {monitor.sliding_max} "
        "in the last second.",
        "",
        *verdict_table(checks, "scenario"),
    ]
    return "\n".join(lines) + "\n"
