"""Locust, headless on ``loadtest/locustfile.py`` with worker processes, and what it reports."""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtest.reports import Verdict
from loadtest.servers import ROOT, free_port

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
DRAIN_SECONDS = 3.0
"""Seconds Locust runs on after the users stop starting work (``LOADTEST_DURATION``), so that
the dialer's batches in flight (their permits up to its 2 s wait budget ahead) land first."""
LOCUST_GRACE = 90.0
"""Seconds Locust may take beyond the run time to start, stop its workers and write reports."""
USER_CLASSES = {
    "fixed": "FixedWindowUser",
    "sliding": "SlidingWindowUser",
    "token": "TokenBucketUser",
    "dialer": "DialerUser",
}


def run_locust(args: argparse.Namespace, env: Mapping[str, str], output: Path) -> int:
    """Runs Locust to the end, its output in ``output/locust.log``; returns its exit code. The
    users work for ``args.duration`` seconds (``env`` says so), then the calls in flight land."""
    users = args.users * sum(1 for s in args.scenarios if s != "dialer")
    users += args.dialer_users if "dialer" in args.scenarios else 0
    master_port = free_port()
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{math.ceil(args.duration + DRAIN_SECONDS)}s",
        "--processes",
        str(args.processes),
        "--csv",
        str(output / "locust"),
        "--html",
        str(output / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "2",
        # A port of this run's own: on the default one, the workers of another Locust run on
        # the machine would join this master, and it would hand them users.
        "--master-bind-port",
        str(master_port),
        "--master-port",
        str(master_port),
        *(USER_CLASSES[s] for s in args.scenarios),
    ]
    with (output / "locust.log").open("w") as log:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=args.duration + LOCUST_GRACE,
            check=False,
        )
    return done.returncode


def locust_totals(output: Path) -> dict[str, Any]:
    """Requests and failures per name from Locust's CSV."""
    totals: dict[str, Any] = {}
    path = output / "locust_stats.csv"
    if not path.exists():
        return totals
    with path.open() as handle:
        for row in csv.DictReader(handle):
            totals[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "median_ms": float(row["Median Response Time"] or 0),
            }
    return totals


def failures_verdict(totals: Mapping[str, Any]) -> Verdict:
    """No request may fail: a decision that failed open or a dial that failed means the run
    measured something else. No totals at all count as a failure."""
    failures = totals.get("Aggregated", {}).get("failures", 1)
    return Verdict("locust", "failed requests (fail-open decisions, dial errors)", failures, 0)
