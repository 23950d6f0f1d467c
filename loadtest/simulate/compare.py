"""``python -m loadtest.simulate.compare``: the dialer's default strategy and the unpaced fixed
window, run one after the other with the same settings and drawn side by side (by default to
``docs/pacing.png``). Options other than those below are the simulation's own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final, TextIO, cast

from .chart import write_side_by_side
from .config import DEFAULT_STRATEGY, STRATEGIES, StrategyName, parse_args
from .run import run_simulation
from .summary import Summary

DEFAULT_IMAGE: Final = Path("docs/pacing.png")
UNPACED: Final[StrategyName] = "fixed"
HEADLINE_FIGURES: Final = ("second", "tenth")


def column_title(summary: Summary) -> str:
    """The strategy and its headline figures, with their verdicts."""
    figures = [figure for figure in summary.pacing if figure.key in HEADLINE_FIGURES]
    return f"{summary.strategy}: " + "; ".join(
        f"{figure.label.split(' (')[0]} {figure.value:g} calls, {figure.verdict}"
        for figure in figures
    )


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> list[Summary]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.simulate.compare",
        description="Run two strategies with the same settings and draw their calls at the "
        "worker side by side.",
        epilog="Any other option goes to the simulation (python -m loadtest.simulate --help).",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULT_STRATEGY,
        help="the left-hand run (default: the dialer's default)",
    )
    parser.add_argument("--against", choices=STRATEGIES, default=UNPACED, help="the right-hand run")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the PNG to write")
    args, rest = parser.parse_known_args(argv)
    base = parse_args(rest)
    summaries = []
    for name in (args.strategy, args.against):
        summary = run_simulation(replace(base, strategy=cast(StrategyName, name)))
        print(summary.render(), file=out or sys.stdout)
        summaries.append(summary)
    traces = [
        replace(summary.pace.trace, title=column_title(summary))
        for summary in summaries
        if summary.pace is not None and summary.pace.trace is not None
    ]
    if len(traces) < len(summaries):
        parser.exit(1, "compare: a run has no record of calls at the worker to draw\n")
    demand = base.concurrency * base.batch_size / base.max_cps
    write_side_by_side(
        args.image,
        traces,
        f"Calls as they arrive at the worker: MAX_CPS {base.max_cps}, "
        f"{demand:g}x the limit asked for at once, {base.tasks} tasks",
    )
    print(f"written: {args.image}", file=out or sys.stdout)
    return summaries


if __name__ == "__main__":
    main()
