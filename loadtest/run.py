"""The load test: ``python -m loadtest.run`` (``make loadtest``).

Starts a redis-server and the worker stub, runs Locust headless on ``loadtest/locustfile.py``
for a bounded time with several worker processes, then checks the outcome from the stub's
record of every call it received and from Redis:

- the sliding window and the token bucket: no interval of one second holds more calls than the
  limit (see ``--jitter``), after the warm-up (``--warmup``);
- the fixed window and the dialer (which paces with the fixed window): no aligned second
  (window) after the warm-up holds more calls than the limit;
- every scenario: utilisation, the calls over the limit's capacity in the run's whole seconds
  (all but the first and the last), at least 98% while the demand is twice the limit;
- Redis, sampled every 50 ms during the run: the fixed window's counters never exceed the
  limit, and the sliding window's log never holds more than the limit in the last second.

It writes Locust's CSV and HTML reports, ``loadtest.json``, ``loadtest.md`` and a chart of
calls per second against the limit (``loadtest.png``) to ``loadtest/results/``, prints the
checks, and exits with 1 when one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from loadtest.servers import RedisServer, free_port, worker_stub_process
from loadtest.simulate import max_in_window, trailing_series

from ._tasks import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
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
MIN_UTILISATION = 0.98
MONITOR_INTERVAL = 0.05
LOCUST_GRACE = 90.0
"""Seconds Locust may take beyond the run time to start, stop its workers and write reports."""
WINDOWED = ("fixed", "dialer")
"""Scenarios paced by the fixed window: checked per aligned second."""


@dataclass
class RedisMonitor:
    """Samples the limiters' state in Redis while the test runs."""

    url: str
    run_id: str
    fixed_max: dict[str, int] = field(default_factory=dict)
    sliding_max: int = 0
    samples: int = 0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            while not self._stop.wait(MONITOR_INTERVAL):
                try:
                    self._sample(client)
                except redis.RedisError:
                    self.errors += 1
        finally:
            client.close()

    def _sample(self, client: redis.Redis) -> None:
        reply: Any = client.time()
        seconds, micros = reply
        now_us = seconds * 1_000_000 + micros
        pipe = client.pipeline(transaction=False)
        fixed_keys = [
            (scenario, f"lt-{self.run_id}-{scenario}:{second}")
            for scenario in WINDOWED
            for second in (seconds - 1, seconds)
        ]
        for _, key in fixed_keys:
            pipe.get(key)
        # The sliding window's log scores each grant with its time in microseconds; entries
        # ahead of now are reservations, not yet calls.
        pipe.zcount(f"lt-{self.run_id}-sliding:log", f"({now_us - 1_000_000}", now_us)
        *counters, sliding = pipe.execute()
        for (scenario, _), value in zip(fixed_keys, counters, strict=True):
            self.fixed_max[scenario] = max(self.fixed_max.get(scenario, 0), int(value or 0))
        self.sliding_max = max(self.sliding_max, int(sliding))
        self.samples += 1


@dataclass
class Check:
    scenario: str
    text: str
    measured: float
    threshold: float
    at_least: bool = False
    percent: bool = False

    @property
    def passed(self) -> bool:
        return self.measured >= self.threshold if self.at_least else self.measured <= self.threshold


@dataclass
class ScenarioResult:
    scenario: str
    calls: int
    utilisation: float
    max_any_second: int
    max_any_second_less_jitter: int
    max_aligned_second: int
    per_second: dict[int, int]


def utilisation(per_second: Counter[int], limit: int) -> float:
    """Calls over the limit's capacity in the whole seconds strictly between the first and the
    last second with calls: the run's ramp-up and stop cut those two short."""
    if len(per_second) < 3:
        return 0.0
    first, last = min(per_second), max(per_second)
    full = range(first + 1, last)
    return sum(per_second[s] for s in full) / (limit * len(full))


def scenario_result(
    scenario: str, times: Sequence[float], limit: int, jitter: float, warmup: float = 0.0
) -> ScenarioResult:
    """The figures of one scenario; the pacing ones count the calls after the warm-up only (and
    whole seconds only, for the aligned ones)."""
    per_second = Counter(math.floor(at) for at in times)
    settled = times[0] + warmup if times else 0.0
    checked = [at for at in times if at >= settled]
    return ScenarioResult(
        scenario=scenario,
        calls=len(times),
        utilisation=utilisation(per_second, limit),
        max_any_second=max_in_window(checked)[0] if checked else 0,
        max_any_second_less_jitter=max_in_window(checked, 1.0 - jitter)[0] if checked else 0,
        max_aligned_second=max(
            (n for s, n in per_second.items() if s >= math.ceil(settled)), default=0
        ),
        per_second=dict(sorted(per_second.items())),
    )


def checks_for(result: ScenarioResult, limit: int, jitter: float) -> list[Check]:
    name = result.scenario
    found = [Check(name, "calls reached the worker", result.calls, 1, at_least=True)]
    if name in WINDOWED:
        found.append(
            Check(
                name, "most calls in one window (aligned second)", result.max_aligned_second, limit
            )
        )
    else:
        found.append(
            Check(
                name,
                f"most calls in any interval of 1 s (less {jitter * 1000:g} ms jitter)",
                result.max_any_second_less_jitter,
                limit,
            )
        )
    found.append(
        Check(
            name,
            "utilisation of the limit at twice the demand",
            result.utilisation,
            MIN_UTILISATION,
            at_least=True,
            percent=True,
        )
    )
    return found


@contextlib.contextmanager
def worker_stub(delay_ms: float, log: Path) -> Iterator[str]:
    """``python -m loadtest.worker_stub`` in a process of its own, logging to ``log``."""
    with log.open("w") as output, worker_stub_process(delay_ms, output) as url:
        yield url


def stub_calls(worker_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{worker_url}/_calls", timeout=30)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()["calls"]
    return calls


USER_CLASSES = {
    "fixed": "FixedWindowUser",
    "sliding": "SlidingWindowUser",
    "token": "TokenBucketUser",
    "dialer": "DialerUser",
}


def run_locust(args: argparse.Namespace, env: dict[str, str], output: Path) -> int:
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
        f"{args.duration:g}s",
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
    import csv

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


def write_chart(path: Path, times: dict[str, list[float]], limit: int, origin: float) -> None:
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
    results: dict[str, ScenarioResult],
    checks: Sequence[Check],
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
        "| scenario | check | measured | limit | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for check in checks:
        shown = f"{check.measured:.1%}" if check.percent else f"{check.measured:g}"
        bound = f"{check.threshold:.0%}" if check.percent else f"{check.threshold:g}"
        sign = ">=" if check.at_least else "<="
        verdict = "PASS" if check.passed else "FAIL"
        lines.append(f"| {check.scenario} | {check.text} | {shown} | {sign} {bound} | {verdict} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    server = RedisServer().start()
    try:
        with worker_stub(args.worker_delay_ms, output / "worker_stub.log") as worker_url:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                ),
                "LOADTEST_REDIS_URL": server.url,
                "LOADTEST_WORKER_URL": worker_url,
                "LOADTEST_LIMIT": str(args.limit),
                "LOADTEST_DEMAND": str(args.demand),
                "LOADTEST_USERS": str(args.users),
                "LOADTEST_DIALER_USERS": str(args.dialer_users),
                "LOADTEST_MAX_WAIT": str(args.max_wait),
                "LOADTEST_RUN_ID": run_id,
            }
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

    times: dict[str, list[float]] = {scenario: [] for scenario in args.scenarios}
    with (output / "calls.csv").open("w") as record:
        record.write("scenario,arrived_at,sent_at\n")
        for call in calls:
            body = call.get("body") or {}
            scenario = str(body.get("campaignId", "")).removeprefix(f"lt-{run_id}-")
            if scenario in times and call["outcome"] == "ok":
                times[scenario].append(float(call["at"]))
                sent = (body.get("metadata") or {}).get("sentAt", "")
                record.write(f"{scenario},{call['at']!r},{sent!r}\n")
    results = {
        s: scenario_result(s, sorted(t), args.limit, args.jitter, args.warmup)
        for s, t in times.items()
    }
    checks = [c for r in results.values() for c in checks_for(r, args.limit, args.jitter)]
    for scenario, value in monitor.fixed_max.items():
        if scenario in args.scenarios:
            checks.append(
                Check(scenario, "Redis: most permits in a window's counter", value, args.limit)
            )
    if "sliding" in args.scenarios:
        checks.append(
            Check(
                "sliding",
                "Redis: most grants in the log's last second",
                monitor.sliding_max,
                args.limit,
            )
        )
    totals = locust_totals(output)
    failures = totals.get("Aggregated", {}).get("failures", 1)
    # A decision that failed open or a dial that failed means the run measured something else.
    checks.append(
        Check("locust", "failed requests (fail-open decisions, dial errors)", failures, 0)
    )
    if monitor.samples == 0:
        checks.append(Check("redis", "monitor samples taken", 0, 1, at_least=True))
    write_chart(output / "loadtest.png", times, args.limit, math.floor(started))
    report = markdown(results, checks, monitor, args)
    (output / "loadtest.md").write_text(report)
    (output / "loadtest.json").write_text(
        json.dumps(
            {
                "settings": {
                    k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                },
                "locust_exit_code": exit_code,
                "locust": totals,
                "scenarios": {s: asdict(r) for s, r in results.items()},
                "redis": {
                    "samples": monitor.samples,
                    "errors": monitor.errors,
                    "fixed_max": monitor.fixed_max,
                    "sliding_max": monitor.sliding_max,
                },
                "checks": [{**asdict(c), "pass": c.passed} for c in checks],
            },
            indent=2,
        )
        + "\n"
    )
    print(report)
    print(f"Locust exited with {exit_code}; reports in {output}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
