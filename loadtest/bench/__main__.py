"""``python -m loadtest.bench``: runs the comparisons, prints and writes the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import loadtest.bench
from loadtest.reports import RESULTS, write_report
from loadtest.servers import RedisServer

from . import _anatomy, _limiters, _processes, _report, _rules, _scale, _targets
from ._measure import Session

DEFAULT_ROUNDS = 60
DEFAULT_SLICE = 0.05
"""Seconds each contender runs per round in the throughput comparisons. Short slices and many
rounds keep the contenders of one round within a fraction of a second of each other, so that
the per-round ratios cancel out the load of other processes, which here changes by the second."""
DEFAULT_PROCESS_ROUNDS = 9
"""Rounds of the comparisons that start a process per sample (cold imports) or that take a
tenth of a second per sample (the dialer's batches)."""
SECTIONS: dict[str, Callable[[Session], None]] = {
    "single": _limiters.single_permit,
    "cpu": _scale.server_cpu,
    "anatomy": _anatomy.anatomy,
    "saturation": _scale.saturation,
    "batch": _limiters.batch_of_ten,
    "async": _limiters.concurrency,
    "deny": _limiters.over_the_limit,
    "tracing": _processes.tracing,
    "dialer": _processes.dialer,
    "rules": _rules.rules,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=loadtest.bench.__doc__
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--slice", type=float, default=DEFAULT_SLICE, help="seconds per sample")
    parser.add_argument("--process-rounds", type=int, default=DEFAULT_PROCESS_ROUNDS)
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run these only"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = _report.machine()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        server = RedisServer().start()
        stack.callback(server.cleanup)
        print(f"redis-server on port {server.port}; {args.rounds} rounds", flush=True)
        session = Session(server.url, args.rounds, args.slice, args.process_rounds, stack)
        for name in args.only:
            SECTIONS[name](session)
    info["load_average_after"] = os.getloadavg()
    info["seconds"] = round(time.perf_counter() - started, 1)
    verdicts = _targets.verdicts(session.comparisons)
    markdown = _report.table(session, verdicts, info)
    print()
    print(markdown)
    report = {
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "slice_seconds": args.slice,
            "process_rounds": args.process_rounds,
        },
        "comparisons": [c.to_json() for c in session.comparisons.values()],
        "targets": [v.to_json() for v in verdicts],
    }
    write_report(args.output, "bench", markdown, report)
    print(f"{info['seconds']} s; wrote {args.output / 'bench.json'} and bench.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
