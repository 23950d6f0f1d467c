"""``python -m loadtest.run``: the command line, and the run from start to report."""

from __future__ import annotations

import argparse
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

import loadtest.run
from cps_limiter import STRATEGY_NAMES
from dialer_lambda import Settings as DialerSettings
from loadtest._tasks import SCENARIOS
from loadtest.reports import RESULTS, write_report
from loadtest.servers import RedisServer, child_env, worker_stub_process

from ._checks import DIALER, checks_for, scenario_result
from ._locust import failures_verdict, locust_totals, run_locust
from ._monitor import RedisMonitor
from ._report import RunOutcome, dialer_summary, markdown, write_chart

COUNTED = ("paced", "fixed")
"""The dialer's strategies that keep the seed's window counters, ``cps:<unix_ts>``."""

DEFAULT_DURATION = 60.0
DEFAULT_PROCESSES = 2
DEFAULT_MAX_CPS = 50
DEFAULT_STRATEGY = DialerSettings.from_env({}).strategy
"""The dialer's own default ``CPS_STRATEGY``."""
DEFAULT_DEMAND = 2.0
DEFAULT_USERS = 10
MIN_DIALER_USERS = 4
CALLS_PER_DIALER_USER = 25.0
"""Calls per second each dialer user offers, unless ``--dialer-users`` is given: the users then
grow with MAX_CPS, and at twice the demand their batches queue about as far ahead of the pacer
at any MAX_CPS, within the dialer's wait budget, so that it never idles."""
DEFAULT_MAX_WAIT = 0.25
DEFAULT_WORKER_DELAY_MS = 20.0
DEFAULT_JITTER = 0.1
"""Seconds of timing noise the sliding and token scenarios' own checks allow between Redis's
decision and the call's arrival at the stub: they count calls in every interval of 1 s minus
this. These limiters grant exactly the limit on the Redis clock with no headroom (the sliding
window grants again exactly one second after it last granted, in bursts), so any noise on the
way to the stub shows at the stub as more than the limit in some second; their strict figures
are printed beside. The dialer's checks allow none."""
DEFAULT_WARMUP = 2.0
"""Seconds from a limiter scenario's first call that its own pacing checks leave out: while
users start, connections open and scripts load, a call granted near the end of a window can
reach the stub over 100 ms later, in the next one. The strict figures leave out nothing."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=loadtest.run.__doc__
    )
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument(
        "--max-cps",
        "--limit",
        dest="max_cps",
        type=int,
        nargs="+",
        default=[DEFAULT_MAX_CPS],
        help="calls/s per scenario; several values run one after the other",
    )
    parser.add_argument(
        "--strategy",
        nargs="+",
        choices=STRATEGY_NAMES,
        default=[DEFAULT_STRATEGY],
        help="the dialer's CPS_STRATEGY; several values run one after the other",
    )
    parser.add_argument("--demand", type=float, default=DEFAULT_DEMAND, help="times the limit")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="per limiter scenario")
    parser.add_argument(
        "--dialer-users",
        type=int,
        default=None,
        help=f"default: MAX_CPS x demand / {CALLS_PER_DIALER_USER:g}, at least {MIN_DIALER_USERS}",
    )
    parser.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT)
    parser.add_argument("--worker-delay-ms", type=float, default=DEFAULT_WORKER_DELAY_MS)
    parser.add_argument("--jitter", type=float, default=DEFAULT_JITTER, help="seconds")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP, help="seconds")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def dialer_users(args: argparse.Namespace, limit: int) -> int:
    users: int | None = args.dialer_users
    demand: float = args.demand
    if users is not None:
        return users
    return max(MIN_DIALER_USERS, math.ceil(limit * demand / CALLS_PER_DIALER_USER))


def stub_calls(worker_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{worker_url}/_calls", timeout=30)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()["calls"]
    return calls


def sent_at(body: dict[str, Any]) -> float | None:
    """When the caller sent the call, by its own clock: the limiter users stamp ``sentAt`` in
    the metadata; the dialer stamps the callId's last part, in milliseconds, as a dial starts."""
    sent = (body.get("metadata") or {}).get("sentAt")
    if isinstance(sent, int | float):
        return float(sent)
    stamp = str(body.get("callId", "")).rpartition("-")[2]
    return int(stamp) / 1000 if stamp.isdigit() else None


def arrivals(
    calls: Sequence[dict[str, Any]], run_id: str, scenarios: Sequence[str], record: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """When each scenario's successful calls reached the stub, and when they were sent (where
    the call says); also written to ``record``."""
    times: dict[str, list[float]] = {scenario: [] for scenario in scenarios}
    sent: dict[str, list[float]] = {scenario: [] for scenario in scenarios}
    with record.open("w") as output:
        output.write("scenario,arrived_at,sent_at\n")
        for call in calls:
            body = call.get("body") or {}
            scenario = str(body.get("campaignId", "")).removeprefix(f"lt-{run_id}-")
            if scenario in times and call["outcome"] == "ok":
                times[scenario].append(float(call["at"]))
                at = sent_at(body)
                if at is not None:
                    sent[scenario].append(at)
                output.write(f"{scenario},{call['at']!r},{'' if at is None else repr(at)}\n")
    return times, sent


def one_run(args: argparse.Namespace, strategy: str, limit: int, output: Path) -> RunOutcome:
    """One Locust run at ``limit`` with the dialer on ``strategy``, checked and written down in
    ``output``; ``args`` holds the rest of the settings."""
    run = argparse.Namespace(
        **{
            **vars(args),
            "max_cps": limit,
            "limit": limit,
            "strategy": strategy,
            "dialer_users": dialer_users(args, limit),
            "output": output,
        }
    )
    output.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()[0]
    counted = [s for s in run.scenarios if s == "fixed" or (s == DIALER and strategy in COUNTED)]
    server = RedisServer().start()
    try:
        with worker_stub_process(run.worker_delay_ms, output / "worker_stub.log") as worker_url:
            env = child_env(
                LOADTEST_REDIS_URL=server.url,
                LOADTEST_WORKER_URL=worker_url,
                LOADTEST_LIMIT=str(limit),
                LOADTEST_STRATEGY=strategy,
                LOADTEST_DEMAND=str(run.demand),
                LOADTEST_USERS=str(run.users),
                LOADTEST_DIALER_USERS=str(run.dialer_users),
                LOADTEST_MAX_WAIT=str(run.max_wait),
                LOADTEST_RUN_ID=run_id,
                LOADTEST_DURATION=str(run.duration),
            )
            monitor = RedisMonitor(server.url, run_id, counted)
            monitor.start()
            started = time.time()
            print(
                f"locust: {run.duration:g} s, {run.processes} processes, MAX_CPS {limit}, "
                f"dialer on {strategy}, scenarios {', '.join(run.scenarios)}; "
                f"redis {server.url}, worker stub {worker_url}",
                flush=True,
            )
            try:
                exit_code = run_locust(run, env, output)
            finally:
                monitor.stop()
            calls = stub_calls(worker_url)
    finally:
        server.cleanup()
    load = (load_before, os.getloadavg()[0])

    times, sent = arrivals(calls, run_id, run.scenarios, output / "calls.csv")
    results = {
        s: scenario_result(s, t, limit, run.jitter, run.warmup, sent[s]) for s, t in times.items()
    }
    totals = locust_totals(output)
    checks = [
        *(c for r in results.values() for c in checks_for(r, limit, run.jitter)),
        *monitor.verdicts(run.scenarios, limit),
        failures_verdict(totals),
    ]
    outcome = RunOutcome(strategy, limit, results, checks, monitor, load)
    write_chart(output / "loadtest.png", times, limit, math.floor(started))
    report = markdown(outcome, run)
    data = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run).items()},
        "load_average": {"before": load[0], "after": load[1]},
        "locust_exit_code": exit_code,
        "locust": totals,
        "scenarios": {s: asdict(r) for s, r in results.items()},
        "redis": monitor.to_json(),
        "checks": [c.to_json() for c in checks],
    }
    write_report(output, "loadtest", report, data)
    print(report)
    print(f"Locust exited with {exit_code}; reports in {output}", flush=True)
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [(strategy, limit) for strategy in args.strategy for limit in args.max_cps]
    outcomes = [
        one_run(
            args,
            strategy,
            limit,
            args.output if len(runs) == 1 else args.output / f"{strategy}-{limit}",
        )
        for strategy, limit in runs
    ]
    if DIALER in args.scenarios:
        summary = "\n".join(dialer_summary(outcomes)) + "\n"
        (args.output / "summary.md").write_text(summary)
        print(summary)
    return 0 if all(c.passed for o in outcomes for c in o.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
