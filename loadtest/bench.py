"""Benchmarks of cps_limiter and the dialer, side by side with what users would use instead.

``python -m loadtest.bench`` (``make bench``) starts its own redis-server on a free port and a
worker stub, then runs every comparison in one go. Within a comparison the contenders take turns
round by round (the order rotating each round), so that a noisy neighbour slows all of them
alike; each figure is the median of the rounds, and each ratio is the median of the per-round
ratios against the baseline measured in the same round. It prints a table and the targets with
PASS/MISS, and writes ``loadtest/results/bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from cps_limiter import AsyncLimiter, FixedWindow, Limiter, SlidingWindow, Strategy, TokenBucket
from loadtest.servers import (
    REDIS_SERVER,
    RedisServer,
    worker_stub_process,
)

from ._probe import SAMPLED_RATIO, timed_rate

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROUNDS = 60
DEFAULT_SLICE = 0.05
"""Seconds each contender runs per round in the throughput comparisons. Short slices and many
rounds keep the contenders of one round within a fraction of a second of each other, so that
the per-round ratios cancel out the load of other processes, which here changes by the second."""
DEFAULT_PROCESS_ROUNDS = 9
"""Rounds of the comparisons that start a process per sample (cold imports) or that take a
tenth of a second per sample (the dialer's batches)."""
UNLIMITED = 10**6
"""A limit no benchmark reaches (permits per second), so that every request is granted."""
ASYNC_CALLERS = 64
BATCH = 10
WORKER_DELAY_MS = 100
RSS_SAMPLES = 3
CHILD_TIMEOUT = 60.0


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    measure: Callable[[], float]
    """Takes one sample (a rate, a duration or a size, in the comparison's unit)."""
    note: str = ""


@dataclass
class Comparison:
    key: str
    title: str
    unit: str
    baseline: str
    contenders: list[Contender]
    rounds: int
    higher_is_better: bool = True
    samples: dict[str, list[float]] = field(default_factory=dict)

    def run(self) -> None:
        self.samples = {c.name: [] for c in self.contenders}
        for index in range(self.rounds):
            shift = index % len(self.contenders)
            for contender in self.contenders[shift:] + self.contenders[:shift]:
                self.samples[contender.name].append(contender.measure())

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str, reference: str | None = None) -> float:
        """Median over rounds of ``name``'s sample divided by the reference's in that round."""
        ref = self.samples[reference or self.baseline]
        return statistics.median(a / b for a, b in zip(self.samples[name], ref, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "baseline": self.baseline,
            "higher_is_better": self.higher_is_better,
            "contenders": [
                {
                    "name": c.name,
                    "note": c.note,
                    "median": self.median(c.name),
                    "min": min(self.samples[c.name]),
                    "max": max(self.samples[c.name]),
                    "ratio": self.ratio(c.name),
                    "samples": self.samples[c.name],
                }
                for c in self.contenders
            ],
        }


@dataclass
class Target:
    """One target of the issue: ``measured`` compared with ``threshold``."""

    text: str
    measured: float
    threshold: float
    at_least: bool
    unit: str = "x"
    why: str = ""

    @property
    def passed(self) -> bool:
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def shown(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.1f}%"
        if self.unit == "x":
            return f"{value:.2f}x"
        return f"{value:.1f} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.text,
            "measured": self.measured,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "unit": self.unit,
            "pass": self.passed,
            "why": self.why,
        }


def rate_of(operation: Callable[[], object], seconds: float, per_call: int = 1) -> float:
    return timed_rate(operation, seconds) * per_call


# -- children ----------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Children write and then use bytecode caches, as an installed package (and the Lambda
    # image, where pip compiled them) would: a cold start is not a compile.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Child:
    """A `loadtest._probe` process answering one JSON line per command."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtest._probe", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_child_env(),
        )
        self.read()  # {"ready": true}

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"probe {self.process.args!r} exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_once(*args: str) -> dict[str, Any]:
    """Run a one-shot `loadtest._probe` command in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtest._probe", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_child_env(),
        timeout=CHILD_TIMEOUT,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def worker_stub(delay_ms: float = 0.0) -> contextlib.AbstractContextManager[str]:
    """The worker stub in a process of its own, as `make loadtest` runs it; yields its URL."""
    return worker_stub_process(delay_ms, env=_child_env())


# -- the comparisons ---------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        url: str,
        rounds: int,
        slice_seconds: float,
        process_rounds: int,
        stack: contextlib.ExitStack,
    ) -> None:
        self.url = url
        self.rounds = rounds
        self.process_rounds = process_rounds
        self.slice = slice_seconds
        self.stack = stack
        self.run_id = uuid.uuid4().hex[:8]
        self.limits_storage = RedisStorage(url)
        self.comparisons: dict[str, Comparison] = {}
        self.notes: dict[str, str] = {}

    def prefix(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

    def limiter(self, name: str, strategy: Strategy, **options: Any) -> Limiter:
        limiter = Limiter.from_url(self.url, strategy, prefix=self.prefix(name), **options)
        self.stack.callback(limiter.close)
        return limiter

    def timed(self, operation: Callable[[], object], per_call: int = 1) -> Callable[[], float]:
        return lambda: rate_of(operation, self.slice, per_call)

    def add(self, comparison: Comparison) -> None:
        started = time.perf_counter()
        print(f"  {comparison.title} ...", end="", flush=True)
        comparison.run()
        print(f" {time.perf_counter() - started:.1f} s", flush=True)
        self.comparisons[comparison.key] = comparison

    def single_permit(self) -> None:
        ping = redis.Redis.from_url(self.url)
        self.stack.callback(ping.close)
        item = RateLimitItemPerSecond(UNLIMITED)
        fixed = FixedWindowRateLimiter(self.limits_storage)
        moving = MovingWindowRateLimiter(self.limits_storage)
        counter = SlidingWindowCounterRateLimiter(self.limits_storage)
        ours = {
            "FixedWindow": self.limiter("fixed", FixedWindow(UNLIMITED)),
            "SlidingWindow": self.limiter("sliding", SlidingWindow(UNLIMITED)),
            "TokenBucket": self.limiter("token", TokenBucket(rate=UNLIMITED)),
        }
        key = self.prefix("limits")
        contenders = [
            Contender("PING (one round trip)", self.timed(ping.ping)),
            *(Contender(f"cps_limiter {n}", self.timed(lim.acquire)) for n, lim in ours.items()),
            Contender("limits FixedWindow", self.timed(lambda: fixed.hit(item, key, "f"))),
            Contender("limits MovingWindow", self.timed(lambda: moving.hit(item, key, "m"))),
            Contender(
                "limits SlidingWindowCounter", self.timed(lambda: counter.hit(item, key, "s"))
            ),
        ]
        self.add(
            Comparison(
                "single",
                "Single-permit acquire, sync, one client",
                "ops/s",
                "limits FixedWindow",
                contenders,
                self.rounds,
            )
        )

    def batch_of_ten(self) -> None:
        item = RateLimitItemPerSecond(UNLIMITED)
        fixed = FixedWindowRateLimiter(self.limits_storage)
        key = self.prefix("limits10")
        ours = self.limiter("fixed10", FixedWindow(UNLIMITED))

        def ten_hits() -> None:
            for _ in range(BATCH):
                fixed.hit(item, key, "ten")

        contenders = [
            Contender(
                "cps_limiter FixedWindow acquire(permits=10)",
                self.timed(lambda: ours.acquire(permits=BATCH), BATCH),
            ),
            Contender("limits FixedWindow, 10 hits", self.timed(ten_hits, BATCH)),
            Contender(
                "limits FixedWindow hit(cost=10)",
                self.timed(lambda: fixed.hit(item, key, "cost", cost=BATCH), BATCH),
                note="for reference: limits can also take 10 at once",
            ),
        ]
        self.add(
            Comparison(
                "batch",
                "Ten permits for a batch of ten tasks",
                "tasks/s",
                "limits FixedWindow, 10 hits",
                contenders,
                self.rounds,
            )
        )

    def concurrency(self) -> None:
        sync = self.limiter("sync", FixedWindow(UNLIMITED))
        asynchronous = AsyncLimiter.from_url(
            self.url, FixedWindow(UNLIMITED), prefix=self.prefix("async")
        )
        runner = asyncio.Runner()
        self.stack.callback(runner.close)
        self.stack.callback(lambda: runner.run(asynchronous.aclose()))

        async def callers(seconds: float) -> float:
            done = 0
            started = time.perf_counter()
            deadline = started + seconds

            async def caller() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await asynchronous.acquire()
                    done += 1

            await asyncio.gather(*(caller() for _ in range(ASYNC_CALLERS)))
            return done / (time.perf_counter() - started)

        runner.run(callers(0.1))  # opens the connections
        contenders = [
            Contender("Limiter (sync), one caller", self.timed(sync.acquire)),
            Contender(
                f"AsyncLimiter, {ASYNC_CALLERS} concurrent callers",
                lambda: runner.run(callers(self.slice)),
            ),
        ]
        self.add(
            Comparison(
                "async",
                "AsyncLimiter with 64 concurrent callers against the sync client",
                "ops/s",
                "Limiter (sync), one caller",
                contenders,
                self.rounds,
            )
        )

    def over_the_limit(self) -> None:
        strategies: dict[str, Callable[[], Strategy]] = {
            "FixedWindow": lambda: FixedWindow(1, window=3600),
            "SlidingWindow": lambda: SlidingWindow(1, window=3600.0),
            "TokenBucket": lambda: TokenBucket(rate=1, period=3600.0),
        }
        grants: dict[str, int] = {}
        contenders: list[Contender] = []
        for name, strategy in strategies.items():
            for cache in (True, False):
                label = f"{name}, deny cache {'on' if cache else 'off'}"
                limiter = self.limiter(f"deny-{name}-{cache}", strategy(), deny_cache=cache)
                limiter.acquire()  # the only permit of the hour: every later request is denied
                grants[label] = 0

                def attempt(limiter: Limiter = limiter, label: str = label) -> None:
                    grants[label] += limiter.acquire().granted

                contenders.append(Contender(label, self.timed(attempt)))
        comparison = Comparison(
            "deny",
            "Over the limit: denials from the local cache against asking Redis each time",
            "ops/s",
            "FixedWindow, deny cache off",
            contenders,
            self.rounds,
        )
        self.add(comparison)
        if any(grants.values()):
            raise AssertionError(f"an exhausted limiter granted permits: {grants}")
        self.notes["deny"] = "No permit was granted by any contender while the key was exhausted."

    def tracing(self) -> None:
        variants = {
            "none": "OpenTelemetry API, no SDK",
            "batch": "OpenTelemetry SDK, BatchSpanProcessor",
            "sampled": f"OpenTelemetry SDK, {SAMPLED_RATIO:.0%} sampled, BatchSpanProcessor",
        }
        for provider, label in variants.items():
            child = Child(
                "tracing",
                "--url",
                self.url,
                "--provider",
                provider,
                "--prefix",
                self.prefix(provider),
            )
            self.stack.callback(child.close)

            def sample(state: str, child: Child = child) -> Callable[[], float]:
                return lambda: float(child.ask(f"run {self.slice} {state}")["rate"])

            self.add(
                Comparison(
                    f"tracing-{provider}",
                    f"Tracing cost: {label}, against no telemetry code in the same process",
                    "ops/s",
                    "telemetry taken out",
                    [
                        Contender("telemetry taken out", sample("off")),
                        Contender(label, sample("on")),
                    ],
                    self.rounds,
                )
            )

    def dialer(self) -> None:
        worker = self.stack.enter_context(worker_stub(WORKER_DELAY_MS))
        child = Child(
            "dialer", "--redis-url", self.url, "--worker-url", worker, "--prefix", self.prefix("d")
        )
        self.stack.callback(child.close)

        def batch(size: int) -> Callable[[], float]:
            def measure() -> float:
                answer = child.ask(f"run {size}")
                if answer["successful"] != size:
                    raise AssertionError(f"a batch of {size} had failures: {answer}")
                return float(answer["seconds"]) * 1000

            return measure

        self.add(
            Comparison(
                "dialer",
                f"Dialer: a batch against a worker answering in {WORKER_DELAY_MS} ms",
                "ms",
                "one dial (batch of 1)",
                [
                    Contender("one dial (batch of 1)", batch(1)),
                    Contender(f"batch of {BATCH}", batch(BATCH)),
                ],
                self.process_rounds * 2,
                higher_is_better=False,
            )
        )
        run_once("import", "--modules", "dialer_lambda.handler")  # writes bytecode caches

        def imports(modules: str) -> Callable[[], float]:
            return lambda: float(run_once("import", "--modules", modules)["seconds"]) * 1000

        self.add(
            Comparison(
                "import",
                "Cold start: import in a fresh interpreter",
                "ms",
                "import redis, httpx",
                [
                    Contender("import redis, httpx", imports("redis,httpx")),
                    Contender("import dialer_lambda.handler", imports("dialer_lambda.handler")),
                ],
                self.process_rounds,
                higher_is_better=False,
            )
        )

        def rss() -> float:
            answer = run_once(
                "rss", "--redis-url", self.url, "--worker-url", worker, "--prefix", self.prefix("r")
            )
            return float(answer["megabytes"])

        self.add(
            Comparison(
                "rss",
                f"Peak memory of a process that handled a batch of {BATCH}",
                "MB",
                "handler process",
                [Contender("handler process", rss, note="resource.getrusage ru_maxrss")],
                RSS_SAMPLES,
                higher_is_better=False,
            )
        )

    # -- targets -------------------------------------------------------------------------------

    def targets(self) -> list[Target]:
        c = self.comparisons
        found: list[Target] = []
        if "single" in c:
            single = c["single"]
            found += [
                Target(
                    "FixedWindow >= 1.0x limits FixedWindow",
                    single.ratio("cps_limiter FixedWindow", "limits FixedWindow"),
                    1.0,
                    True,
                ),
                Target(
                    "TokenBucket >= 1.0x limits FixedWindow",
                    single.ratio("cps_limiter TokenBucket", "limits FixedWindow"),
                    1.0,
                    True,
                ),
                Target(
                    "SlidingWindow >= 1.0x limits MovingWindow",
                    single.ratio("cps_limiter SlidingWindow", "limits MovingWindow"),
                    1.0,
                    True,
                ),
                Target(
                    "FixedWindow >= 0.8x PING",
                    single.ratio("cps_limiter FixedWindow", "PING (one round trip)"),
                    0.8,
                    True,
                ),
            ]
        if "batch" in c:
            found.append(
                Target(
                    "acquire(permits=10) >= 7x the tasks/s of 10 limits hits",
                    c["batch"].ratio("cps_limiter FixedWindow acquire(permits=10)"),
                    7.0,
                    True,
                )
            )
        if "deny" in c:
            for name in ("FixedWindow", "SlidingWindow", "TokenBucket"):
                found.append(
                    Target(
                        f"{name}: deny cache >= 20x asking Redis",
                        c["deny"].ratio(f"{name}, deny cache on", f"{name}, deny cache off"),
                        20.0,
                        True,
                    )
                )
        for provider, label, limit in (
            ("batch", "OpenTelemetry SDK with a BatchSpanProcessor", 20.0),
            ("none", "OpenTelemetry API with no SDK", 3.0),
        ):
            if f"tracing-{provider}" in c:
                tracing = c[f"tracing-{provider}"]
                slowdown = (1 / tracing.ratio(tracing.contenders[1].name) - 1) * 100
                found.append(
                    Target(f"{label}: at most {limit:g}% slower", slowdown, limit, False, "%")
                )
        if "dialer" in c:
            found.append(
                Target(
                    "batch of 10 <= 1.5x one dial's time",
                    c["dialer"].ratio(f"batch of {BATCH}"),
                    1.5,
                    False,
                )
            )
        if "import" in c:
            found.append(
                Target(
                    "import dialer_lambda.handler <= 1.5x import redis, httpx",
                    c["import"].ratio("import dialer_lambda.handler"),
                    1.5,
                    False,
                )
            )
        if "rss" in c:
            found.append(
                Target(
                    "peak RSS after a batch < 80 MB",
                    c["rss"].median("handler process"),
                    80.0,
                    False,
                    "MB",
                )
            )
        return found


# -- report ------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": server.stdout.split()[2].removeprefix("v=") if server.stdout else "?",
        "packages": {
            name: _version(name)
            for name in ("cps-limiter", "redis", "hiredis", "limits", "opentelemetry-sdk")
        },
        "load_average_before": os.getloadavg(),
    }


def _figure(value: float, unit: str) -> str:
    if unit in ("ms", "MB"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def table(bench: Bench, targets: Sequence[Target], info: dict[str, Any]) -> str:
    """The results as markdown: one table per comparison, then the targets."""
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"redis-server {info['redis_server']}, redis-py {info['packages']['redis']}, "
        f"limits {info['packages']['limits']}; {info['date']}; load average before "
        f"{info['load_average_before'][0]:.2f}, after {info['load_average_after'][0]:.2f}. "
        f"Throughput: median of {bench.rounds} rounds of {bench.slice:g} s per contender, the "
        "order rotating each round; ratios are medians of per-round ratios. Dialer and cold "
        f"start: {bench.process_rounds * 2} and {bench.process_rounds} rounds.",
        "",
    ]
    for comparison in bench.comparisons.values():
        unit = comparison.unit
        better = "higher" if comparison.higher_is_better else "lower"
        lines += [
            f"**{comparison.title}** ({unit}, {better}"
            f" is better; ratio against {comparison.baseline})",
            "",
            f"| contender | median {unit} | min - max | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for contender in comparison.contenders:
            name = contender.name + (f" ({contender.note})" if contender.note else "")
            lines.append(
                f"| {name} | {_figure(comparison.median(contender.name), unit)} | "
                f"{_figure(min(comparison.samples[contender.name]), unit)} - "
                f"{_figure(max(comparison.samples[contender.name]), unit)} | "
                f"{comparison.ratio(contender.name):.2f}x |"
            )
        if comparison.key in bench.notes:
            lines += ["", bench.notes[comparison.key]]
        lines.append("")
    lines += ["**Targets**", "", "| target | measured | result |", "| --- | ---: | --- |"]
    for target in targets:
        result = "PASS" if target.passed else "MISS"
        lines.append(f"| {target.text} | {target.shown(target.measured)} | {result} |")
    return "\n".join(lines) + "\n"


SECTIONS = ("single", "batch", "async", "deny", "tracing", "dialer")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--slice", type=float, default=DEFAULT_SLICE, help="seconds per sample")
    parser.add_argument("--process-rounds", type=int, default=DEFAULT_PROCESS_ROUNDS)
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run these only"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    info = machine()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        server = RedisServer().start()
        stack.callback(server.cleanup)
        print(f"redis-server on port {server.port}; {args.rounds} rounds", flush=True)
        bench = Bench(server.url, args.rounds, args.slice, args.process_rounds, stack)
        steps: dict[str, Callable[[], None]] = {
            "single": bench.single_permit,
            "batch": bench.batch_of_ten,
            "async": bench.concurrency,
            "deny": bench.over_the_limit,
            "tracing": bench.tracing,
            "dialer": bench.dialer,
        }
        for name in args.only:
            steps[name]()
    info["load_average_after"] = os.getloadavg()
    info["seconds"] = round(time.perf_counter() - started, 1)
    targets = bench.targets()
    markdown = table(bench, targets, info)
    print()
    print(markdown)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench.md").write_text(markdown)
    report = {
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "slice_seconds": args.slice,
            "process_rounds": args.process_rounds,
        },
        "comparisons": [c.to_json() for c in bench.comparisons.values()],
        "targets": [t.to_json() for t in targets],
    }
    (args.output / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{info['seconds']} s; wrote {args.output / 'bench.json'} and bench.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
