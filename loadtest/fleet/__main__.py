"""``python -m loadtest.fleet``: the outages, for each fail mode asked, with their figures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import (
    DEFAULT_CONTAINERS,
    DEFAULT_DEMAND,
    DEFAULT_MAX_CPS,
    DEFAULT_OUT,
    FAULTS,
    FleetConfig,
)
from .figures import Figures
from .run import run_outage


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fleet", description=__doc__)
    parser.add_argument("--faults", default=",".join(FAULTS), help="stall, kill or both")
    parser.add_argument("--modes", default="bounded,open", help="CPS_FAIL_MODE values")
    parser.add_argument("--containers", type=int, default=DEFAULT_CONTAINERS)
    parser.add_argument("--max-cps", type=int, default=DEFAULT_MAX_CPS)
    parser.add_argument("--demand", type=float, default=DEFAULT_DEMAND, help="x MAX_CPS")
    parser.add_argument("--warm-up", type=float, default=4.0)
    parser.add_argument("--outage", type=float, default=6.0)
    parser.add_argument("--after", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for fault in args.faults.split(","):
        for mode in args.modes.split(","):
            config = FleetConfig(
                fault=fault,
                fail_mode=mode,
                containers=args.containers,
                max_cps=args.max_cps,
                demand=args.demand,
                warm_up=args.warm_up,
                outage=args.outage,
                after=args.after,
                out=args.out / f"{fault}-{mode}",
            )
            figures = Figures.of(run_outage(config))
            print(figures.render(), flush=True)
            results.append(dataclasses.asdict(figures))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
