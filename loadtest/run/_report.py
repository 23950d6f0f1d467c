"""The load test's report: a chart of the calls per second against the limit, and the figures
and checks as markdown."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.reports import Verdict, verdict_table
from loadtest.simulate.pace import trailing_series

from ._checks import BURST_WINDOW, DIALER, ScenarioResult
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


@dataclass(frozen=True)
class RunOutcome:
    """One run: its settings, figures and checks, and the machine's load around it."""

    strategy: str
    """The dialer's ``CPS_STRATEGY``."""
    limit: int
    results: Mapping[str, ScenarioResult]
    checks: Sequence[Verdict]
    monitor: RedisMonitor
    load: tuple[float, float]
    """The one-minute load average before and after the run."""


def markdown(outcome: RunOutcome, args: argparse.Namespace) -> str:
    monitor = outcome.monitor
    lines = [
        f"Locust, {args.duration:g} s, {args.processes} processes; MAX_CPS {outcome.limit} per "
        f"scenario, demand {args.demand:g}x the limit; the dialer on CPS_STRATEGY="
        f"{outcome.strategy} with {args.dialer_users} users; worker stub answering in "
        f"{args.worker_delay_ms:g} ms; load average {outcome.load[0]:.2f} before, "
        f"{outcome.load[1]:.2f} after. Strict figures: exact sweeps over every arrival at the "
        f"stub, nothing left out, no allowance. The limiter scenarios' own checks leave out "
        f"their first {args.warmup:g} s (warm-up) and allow {args.jitter * 1000:g} ms of arrival "
        "jitter.",
        "",
        "| scenario | calls | utilisation | most in any 1 s (strict) "
        f"| most in any {BURST_WINDOW * 1000:g} ms (strict) "
        f"| limiter's own: most in any {1000 - args.jitter * 1000:g} ms after warm-up "
        "| limiter's own: most in an aligned second after warm-up "
        "| most in any 1 s by the senders' stamps "
        "| hop to the stub, ms: median / p99 / most |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in outcome.results.values():
        hop = " / ".join(f"{result.hop_ms[k]:.1f}" for k in ("p50", "p99", "max"))
        # The dialer is held to the strict figures only: no allowance, no aligned seconds.
        own = (
            ("-", "-")
            if result.scenario == DIALER
            else (result.max_settled_less_jitter, result.max_aligned_second)
        )
        lines.append(
            f"| {result.scenario} | {result.calls} | {result.utilisation:.1%} | "
            f"{result.max_any_second} | {result.max_any_burst_window} | {own[0]} | {own[1]} | "
            f"{result.sent_max_any_second} | {hop or '-'} |"
        )
    lines += [
        "",
        f"Redis, {monitor.samples} samples: window counters at most "
        f"{monitor.counter_max or {}}; sliding-window log at most {monitor.sliding_max} "
        "in the last second.",
        "",
        *verdict_table(outcome.checks, "scenario"),
    ]
    return "\n".join(lines) + "\n"


def dialer_summary(outcomes: Sequence[RunOutcome]) -> list[str]:
    """The dialer's strict figures, one row per run, as the lines of a markdown table."""
    lines = [
        "| strategy | MAX_CPS | busiest 1 s (strict) | busiest 100 ms (strict) | utilisation "
        "| max cps:<ts> | verdicts | load average |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for outcome in outcomes:
        result = outcome.results[DIALER]
        counter = outcome.monitor.counter_max.get(DIALER)
        checks = [c for c in outcome.checks if c.subject == DIALER]
        missed = [c.text for c in checks if not c.passed]
        lines.append(
            f"| {outcome.strategy} | {outcome.limit} | {result.max_any_second} | "
            f"{result.max_any_burst_window} | {result.utilisation:.1%} | "
            f"{'-' if counter is None else counter} | "
            f"{'PASS' if not missed else 'MISS: ' + '; '.join(missed)} | "
            f"{outcome.load[0]:.2f} / {outcome.load[1]:.2f} |"
        )
    return lines
