"""``python -m loadtest.run``: the command line, and the run from start to report."""

from __future__ import annotations

import argparse
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

import loadtest.run
from loadtest._tasks import SCENARIOS
from loadtest.reports import RESULTS, write_report
from loadtest.servers import RedisServer, child_env, worker_stub_process

from ._checks import checks_for, scenario_result
from ._locust import failures_verdict, locust_totals, run_locust
from ._monitor import RedisMonitor
from ._report import markdown, write_chart

DEFAULT_DURATION = 60.0
DEFAULT_PROCESSES = 2
DEFAULT_LIMIT = 50
DEFAULT_DEMAND = 2.0
DEFAULT_USERS = 10
DEFAULT_DIALER_USERS = 4
DEFAULT_MAX_WAIT = 0.25
DEFAULT_WORKER_DELAY_MS = 20.0
DEFAULT_JITTER = 0.1
"""Seconds of timing noise allowed between Redis's decision and the call's arrival at the stub:
the sliding and token checks count calls in every interval of 1 s minus this. The sliding
window grants a permit again exactly one second after it last granted it, and the users ask
together, so its grants come in bursts that repeat every second. The calls of one burst reach
the stub spread over up to ~60 ms here (a gevent scheduler running dozens of users, a threaded
HTTP server answering them, all on two cores), differently each second, so counting arrivals in
exact 1 s intervals reports that noise. Algorithmic overshoots are far larger: a fixed window
lets up to twice the limit into some second, a token bucket with a burst of the limit nearly
twice; both fail this check. The exactness to the permit is the unit tests' job, on the Redis
clock."""
DEFAULT_WARMUP = 2.0
"""Seconds from a scenario's first call that the pacing checks leave out: while users start,
connections open and scripts load, a call granted near the end of a window can reach the stub
over 100 ms later, in the next one. Utilisation leaves out the first second either way."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=loadtest.run.__doc__
    )
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="calls/s per scenario")
    parser.add_argument("--demand", type=float, default=DEFAULT_DEMAND, help="times the limit")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="per limiter scenario")
    parser.add_argument("--dialer-users", type=int, default=DEFAULT_DIALER_USERS)
    parser.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT)
    parser.add_argument("--worker-delay-ms", type=float, default=DEFAULT_WORKER_DELAY_MS)
    parser.add_argument("--jitter", type=float, default=DEFAULT_JITTER, help="seconds")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP, help="seconds")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def stub_calls(worker_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{worker_url}/_calls", timeout=30)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()["calls"]
    return calls


def arrivals(
    calls: Sequence[dict[str, Any]], run_id: str, scenarios: Sequence[str], record: Path
) -> dict[str, list[float]]:
    """When each scenario's successful calls reached the stub; also written to ``record``."""
    times: dict[str, list[float]] = {scenario: [] for scenario in scenarios}
    with record.open("w") as output:
        output.write("scenario,arrived_at,sent_at\n")
        for call in calls:
            body = call.get("body") or {}
            scenario = str(body.get("campaignId", "")).removeprefix(f"lt-{run_id}-")
            if scenario in times and call["outcome"] == "ok":
                times[scenario].append(float(call["at"]))
                sent = (body.get("metadata") or {}).get("sentAt", "")
                output.write(f"{scenario},{call['at']!r},{sent!r}\n")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    server = RedisServer().start()
    try:
        with worker_stub_process(args.worker_delay_ms, output / "worker_stub.log") as worker_url:
            env = child_env(
                LOADTEST_REDIS_URL=server.url,
                LOADTEST_WORKER_URL=worker_url,
                LOADTEST_LIMIT=str(args.limit),
                LOADTEST_DEMAND=str(args.demand),
                LOADTEST_USERS=str(args.users),
                LOADTEST_DIALER_USERS=str(args.dialer_users),
                LOADTEST_MAX_WAIT=str(args.max_wait),
                LOADTEST_RUN_ID=run_id,
            )
            monitor = RedisMonitor(server.url, run_id)
            monitor.start()
            started = time.time()
            print(
                f"locust: {args.duration:g} s, {args.processes} processes, scenarios "
                f"{', '.join(args.scenarios)}; redis {server.url}, worker stub {worker_url}",
                flush=True,
            )
            try:
                exit_code = run_locust(args, env, output)
            finally:
                monitor.stop()
            calls = stub_calls(worker_url)
    finally:
        server.cleanup()

    times = arrivals(calls, run_id, args.scenarios, output / "calls.csv")
    results = {
        s: scenario_result(s, sorted(t), args.limit, args.jitter, args.warmup)
        for s, t in times.items()
    }
    totals = locust_totals(output)
    checks = [
        *(c for r in results.values() for c in checks_for(r, args.limit, args.jitter)),
        *monitor.verdicts(args.scenarios, args.limit),
        failures_verdict(totals),
    ]
    write_chart(output / "loadtest.png", times, args.limit, math.floor(started))
    report = markdown(results, checks, monitor, args)
    data = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "locust_exit_code": exit_code,
        "locust": totals,
        "scenarios": {s: asdict(r) for s, r in results.items()},
        "redis": monitor.to_json(),
        "checks": [c.to_json() for c in checks],
    }
    write_report(output, "loadtest", report, data)
    print(report)
    print(f"Locust exited with {exit_code}; reports in {output}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
