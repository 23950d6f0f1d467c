"""Fixtures for the reliability tests: Redis processes with faults that can be switched on and
off, a load that records every decision with its latency, and the measured figures.

A fault is injected while a load runs, held, and healed; the tests then check what the contract
promises: no exception, each decision inside its time bound, fail-open (or fail-closed) told in
the Decision, the log and the metric, and exact decisions again within a second of Redis
returning. ``RELIABILITY_REPORT=/path.json`` writes the measured figures for the README's table.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cps_limiter import (
    AsyncLimiter,
    Decision,
    FixedWindow,
    Limiter,
    SlidingWindow,
    Strategy,
    TokenBucket,
    _telemetry,
)
from dialer_lambda import handler
from dialer_lambda._batch import BatchResult
from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, make_task
from tests.support.proxy import BlackholeProxy

T = TypeVar("T")

DECISION_BOUND = 0.25
"""The contract's ceiling for one decision, in seconds."""
RECOVERY_BOUND = 1.0
"""Exact decisions must be back within this many seconds of Redis returning."""
FAULT_SECONDS = 0.8
"""How long a fault is held: longer than the breaker's recovery time (0.5 s), so that its
half-open probes meet the fault too."""
LOAD_THREADS = 4
LOAD_PAUSE = 0.002
"""Seconds between two decisions of one load thread: a steady load, not a busy loop."""
WAIT_TIMEOUT = 10.0
LIMIT = 40
HAMMER_THREADS = 8
HAMMER_ATTEMPTS = 10  # 8 * 10 = 80 attempts at a limit of 40: every strategy must deny some
LONG = 10**9
"""A window far longer than the test, so that nothing refills or rolls over while it runs."""
LOAD_LIMIT = 10**6
"""The load's own limit: high enough that it is never exhausted, so each of its decisions
goes to Redis (a denial would be answered from the limiter's local cache)."""


def strategy(name: str, limit: int) -> Strategy:
    """A strategy whose count cannot change by the clock during a test."""
    if name == "fixed":
        return FixedWindow(limit, window=LONG)
    if name == "sliding":
        return SlidingWindow(limit, window=float(LONG))
    return TokenBucket(rate=limit, period=float(LONG))


STRATEGY_NAMES = ("fixed", "sliding", "token")


# -- the load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One decision: when it started (monotonic), how long it took, and what it gave."""

    started: float
    seconds: float
    decision: Decision | None
    error: BaseException | None

    @property
    def ended(self) -> float:
        return self.started + self.seconds

    @property
    def exact(self) -> bool:
        """Decided by Redis: neither failed open nor raised."""
        return self.decision is not None and not self.decision.fail_open


class Load:
    """Threads calling ``decide`` in a steady loop until stopped; every call is a `Sample`.

    Exceptions are recorded, not raised: the tests assert that there are none (or, fail
    closed, that they are the expected ones).
    """

    def __init__(self, decide: Callable[[], Decision], threads: int = LOAD_THREADS) -> None:
        self._decide = decide
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.samples: list[Sample] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WAIT_TIMEOUT)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            decision: Decision | None = None
            error: BaseException | None = None
            try:
                decision = self._decide()
            except Exception as exc:
                error = exc
            sample = Sample(started, time.monotonic() - started, decision, error)
            with self._changed:
                self.samples.append(sample)
                self._changed.notify_all()
            self._stop.wait(LOAD_PAUSE)

    def wait_for(
        self, predicate: Callable[[Sample], bool], timeout: float = WAIT_TIMEOUT
    ) -> Sample:
        """The first sample (already taken or still to come) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for sample in self.samples[seen:]:
                    if predicate(sample):
                        return sample
                seen = len(self.samples)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such decision within {timeout}s")
                self._changed.wait(left)

    def since(self, moment: float) -> list[Sample]:
        with self._lock:
            return [sample for sample in self.samples if sample.started >= moment]

    def errors(self) -> list[BaseException]:
        with self._lock:
            return [sample.error for sample in self.samples if sample.error is not None]

    def worst(self) -> float:
        with self._lock:
            return max(sample.seconds for sample in self.samples)


def burst(call: Callable[[], T], threads: int, attempts: int = 1) -> list[tuple[float, T]]:
    """``threads`` threads released at once, each making ``attempts`` calls; each call's
    result with the seconds it took."""
    start = threading.Barrier(threads)
    results: list[tuple[float, T]] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        mine = []
        for _ in range(attempts):
            began = time.monotonic()
            result = call()
            mine.append((time.monotonic() - began, result))
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=WAIT_TIMEOUT)
    return results


def hammer(acquire: Callable[[], Decision]) -> list[Decision]:
    """HAMMER_THREADS threads released at once, each taking HAMMER_ATTEMPTS decisions."""
    return [decision for _, decision in burst(acquire, HAMMER_THREADS, HAMMER_ATTEMPTS)]


async def async_hammer(acquire: Callable[[], Coroutine[Any, Any, Decision]]) -> list[Decision]:
    """HAMMER_THREADS coroutines at once, each taking HAMMER_ATTEMPTS decisions in turn."""

    async def one() -> list[Decision]:
        return [await acquire() for _ in range(HAMMER_ATTEMPTS)]

    rounds = await asyncio.gather(*(one() for _ in range(HAMMER_THREADS)))
    return [decision for decisions in rounds for decision in decisions]


# -- faults ----------------------------------------------------------------------------------


class Fault(ABC):
    """A Redis that can be broken and mended; ``url`` is where the code under test connects."""

    name: str
    loses_data: bool = False
    """Counters and scripts are gone once Redis is back."""
    held: bool = True
    """The fault lasts until `heal`; otherwise `inject` is over when it returns."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, socket_timeout=2.0)

    @abstractmethod
    def inject(self) -> None: ...

    @abstractmethod
    def heal(self) -> None:
        """Undo the fault; when it returns, Redis is back."""

    def close(self) -> None:
        self.server.cleanup()


class Killed(Fault):
    """SIGKILL in the middle of the load; started again, empty, once the fault is healed."""

    name = "killed"
    loses_data = True

    def inject(self) -> None:
        self.server.kill()

    def heal(self) -> None:
        self.server.start()


class Stalled(Fault):
    """SIGSTOP: the connections stay open and nothing answers; SIGCONT to heal."""

    name = "stalled"

    def inject(self) -> None:
        self.server.pause()

    def heal(self) -> None:
        self.server.resume()


class RestartedEmpty(Fault):
    """A restart (SIGTERM, then start at once): every counter and cached script is gone."""

    name = "restarted_empty"
    loses_data = True
    held = False

    def inject(self) -> None:
        self.server.restart()

    def heal(self) -> None:
        """Nothing to undo: Redis is back when `inject` returns."""


class OutOfMemory(Fault):
    """``maxmemory`` below the memory in use, with ``noeviction``: writes are refused."""

    name = "out_of_memory"

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self._admin = self.admin()

    def inject(self) -> None:
        used = int(self._admin.info("memory")["used_memory"])
        self._admin.config_set("maxmemory", used // 2)

    def heal(self) -> None:
        self._admin.config_set("maxmemory", 0)

    def close(self) -> None:
        self._admin.close()
        super().close()


class MaxClients(Fault):
    """Redis at ``maxclients`` when the limiter needs a connection: every connection but the
    admin's is dropped and no new one is admitted until the limit is raised again."""

    name = "max_clients"
    FULL = 1  # the admin's own connection fills it

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self._admin = self.admin()
        self._normal = int(self._admin.config_get("maxclients")["maxclients"])

    def inject(self) -> None:
        self._admin.config_set("maxclients", self.FULL)
        self._admin.client_kill_filter(_type="normal", skipme=True)

    def heal(self) -> None:
        self._admin.config_set("maxclients", self._normal)

    def close(self) -> None:
        self._admin.close()
        super().close()


class Blackholed(Fault):
    """Behind a TCP proxy that stops forwarding without closing: silence, no reset."""

    name = "blackholed"

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self.proxy = BlackholeProxy(server.port).start()

    @property
    def url(self) -> str:
        return self.proxy.url

    def inject(self) -> None:
        self.proxy.blackhole()

    def heal(self) -> None:
        self.proxy.heal()

    def close(self) -> None:
        self.proxy.stop()
        super().close()


FAULTS: dict[str, tuple[type[Fault], tuple[str, ...]]] = {
    "killed": (Killed, ()),
    "stalled": (Stalled, ()),
    "restarted_empty": (RestartedEmpty, ()),
    "out_of_memory": (OutOfMemory, ("--maxmemory-policy", "noeviction")),
    "max_clients": (MaxClients, ()),
    "blackholed": (Blackholed, ()),
}


@pytest.fixture(params=sorted(FAULTS))
def fault(request: pytest.FixtureRequest) -> Iterator[Fault]:
    """A redis-server of the test's own, with one of the faults ready to inject."""
    kind, args = FAULTS[request.param]
    made = kind(RedisServer(extra_args=args).start())
    yield made
    made.close()


# -- the measured figures --------------------------------------------------------------------


@dataclass
class Measurement:
    """What one fault run showed, for the README's fault table."""

    component: str
    fault: str
    variant: str
    worst_decision_ms: float
    recovery_ms: float | None
    decisions: int
    fail_open: int
    notes: dict[str, Any] = field(default_factory=dict)


class Report:
    def __init__(self) -> None:
        self.rows: list[Measurement] = []
        self._lock = threading.Lock()

    def add(self, row: Measurement) -> None:
        with self._lock:
            self.rows.append(row)


_REPORT = Report()


@pytest.fixture(scope="session")
def fault_report() -> Iterator[Report]:
    """Collects the measurements; written as JSON to ``$RELIABILITY_REPORT`` when it is set."""
    yield _REPORT
    target = os.environ.get("RELIABILITY_REPORT")
    if target and _REPORT.rows:
        Path(target).write_text(json.dumps([asdict(row) for row in _REPORT.rows], indent=1))


# -- the limiter under test, and one run of a fault ------------------------------------------


class Subject:
    """A Limiter or AsyncLimiter called synchronously from any thread: an AsyncLimiter runs on
    an event loop of its own thread, where the callers' coroutines run concurrently."""

    def __init__(self, url: str, strategy: Strategy, *, kind: str, **options: Any) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if kind == "sync":
            self.limiter: Limiter | AsyncLimiter = Limiter.from_url(url, strategy, **options)
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()

        async def build() -> AsyncLimiter:
            return AsyncLimiter.from_url(url, strategy, **options)

        self.limiter = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def acquire(self, scope: str, permits: int = 1) -> Decision:
        if isinstance(self.limiter, Limiter):
            return self.limiter.acquire(scope, permits)
        return self._run(self.limiter.acquire(scope, permits))

    def peek(self, scope: str) -> Decision:
        if isinstance(self.limiter, Limiter):
            return self.limiter.peek(scope)
        return self._run(self.limiter.peek(scope))

    def close(self) -> None:
        if isinstance(self.limiter, Limiter):
            self.limiter.close()
            return
        self._run(self.limiter.aclose())
        assert self._loop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=WAIT_TIMEOUT)
        self._loop.close()


class Records(logging.Handler):
    """The records of one logger, kept while a run lasts."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def texts(self) -> list[str]:
        formatter = logging.Formatter()
        with self._lock_records:
            return [formatter.format(record) for record in self.records]


@contextlib.contextmanager
def captured(logger_name: str) -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@dataclass
class FaultRun:
    """Everything one fault run showed."""

    fault: str
    variant: str
    stays_exact: bool
    loses_data: bool
    samples: list[Sample]
    injected: float
    back: float
    recovered: Sample
    hammered: list[Decision]
    before: Decision
    warnings: list[logging.LogRecord]
    fail_open_counted: int

    @property
    def recovery(self) -> float:
        return self.recovered.ended - self.back

    def during(self) -> list[Sample]:
        return [s for s in self.samples if self.injected <= s.started < self.back]

    def errors(self) -> list[BaseException]:
        return [s.error for s in self.samples if s.error is not None]

    def worst(self) -> float:
        return max(s.seconds for s in self.samples)

    def measurement(self) -> Measurement:
        return Measurement(
            component="limiter",
            fault=self.fault,
            variant=self.variant,
            worst_decision_ms=round(self.worst() * 1000, 1),
            recovery_ms=round(self.recovery * 1000, 1),
            decisions=len(self.samples),
            fail_open=sum(1 for s in self.samples if s.decision and s.decision.fail_open),
            notes={"errors": len(self.errors()), "stays_exact": self.stays_exact},
        )


def run_fault(
    fault: Fault,
    *,
    strategy_name: str,
    kind: str = "sync",
    fail_mode: str = "open",
    stays_exact: bool = False,
    fail_open_count: Callable[[], int] = lambda: 0,
) -> FaultRun:
    """Run the load on a limiter, break Redis under it, hold, heal, and measure.

    Each load decision takes a permit of a scope of its own, so that none is ever denied from
    the limiter's local cache: every one of them asks Redis (or meets the breaker).
    """
    subject = Subject(
        fault.url, strategy(strategy_name, LIMIT), kind=kind, prefix="rel", fail_mode=fail_mode
    )
    scopes = itertools.count()
    try:
        assert subject.acquire("before", LIMIT).granted == LIMIT
        counted_before = fail_open_count()
        with (
            captured("cps_limiter") as logs,
            Load(lambda: subject.acquire(f"load-{next(scopes)}")) as load,
        ):
            load.wait_for(lambda s: s.exact)
            injected = time.monotonic()
            fault.inject()
            if fault.held:
                if not stays_exact:
                    load.wait_for(lambda s: s.started >= injected and not s.exact)
                time.sleep(max(0.0, injected + FAULT_SECONDS - time.monotonic()))
                fault.heal()
            back = time.monotonic()
            recovered = load.wait_for(lambda s: s.started >= back and s.exact)
        hammered = hammer(lambda: subject.acquire("after"))
        before = subject.peek("before")
        return FaultRun(
            fault=fault.name,
            variant=f"{kind}-{strategy_name}-{fail_mode}",
            stays_exact=stays_exact,
            loses_data=fault.loses_data,
            samples=list(load.samples),
            injected=injected,
            back=back,
            recovered=recovered,
            hammered=hammered,
            before=before,
            warnings=[r for r in logs.records if r.levelno == logging.WARNING],
            fail_open_counted=fail_open_count() - counted_before,
        )
    finally:
        subject.close()


# -- OpenTelemetry -----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def no_limiter_spans() -> Iterator[None]:
    """Latency measured on the limiter, not on the test process: no decision spans (a tracer
    provider installed by an earlier test keeps every span in memory), and what earlier tests
    left on the heap frozen out of garbage collection. Full collections of that heap paused
    decisions by up to 480 ms in a full run, where the same runs alone stayed under 130 ms."""
    gc.collect()
    gc.freeze()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_telemetry, "_active_tracer", lambda: None)
            yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def counted_decisions(strategy_name: str) -> Iterator[Callable[[], int]]:
    """While it lasts, the ``cps_limiter.decisions`` counter records into an SDK of its own,
    whatever global provider another test installed. Yields a reader of the fail_open total
    for the strategy."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter(_telemetry.INSTRUMENTATION_NAME).create_counter(
        _telemetry.COUNTER_NAME
    )
    name = strategy(strategy_name, 1).name

    def fail_open() -> int:
        data = reader.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes == {
                            "cps_limiter.strategy": name,
                            "cps_limiter.outcome": "fail_open",
                        }:
                            total += int(point.value)  # type: ignore[union-attr]
        return total

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_telemetry, "_decisions", counter)
        yield fail_open
    provider.shutdown()


# -- the dialer ------------------------------------------------------------------------------


def dialed(stub: WorkerStub) -> Counter[tuple[object, object]]:
    """How often each (campaignId, contactId) reached the worker."""
    return Counter(
        (call.body.get("campaignId"), call.body.get("contactId"))
        for call in stub.calls
        if call.body is not None
    )


def accounted(result: BatchResult, size: int) -> bool:
    counted = result["successful"] + result["failed"] + result["rateLimited"]
    return result["totalProcessed"] == size == counted + result["duplicates"]


TASKS = 60
BATCH = 10
STEP = 4
INVOCATIONS = 20
REPEATED = (0, 5, 10, 14)


def overlapping_batches() -> list[list[dict[str, Any]]]:
    """Sixteen batches of ten sliding over sixty tasks four at a time (every task in two or
    three of them), then four of those batches delivered again."""
    tasks = [make_task(index) for index in range(TASKS)]
    windows = [
        [tasks[(start * STEP + offset) % TASKS] for offset in range(BATCH)]
        for start in range(INVOCATIONS - len(REPEATED))
    ]
    return windows + [windows[index] for index in REPEATED]


def invoke_concurrently(batches: list[list[dict[str, Any]]]) -> list[BatchResult]:
    """One invocation of the handler per batch, all released at once; their results."""
    start = threading.Barrier(len(batches))
    results: list[BatchResult] = []
    lock = threading.Lock()

    def invoke(batch: list[dict[str, Any]]) -> None:
        start.wait()
        result = handler.handler(batch, FakeContext())
        with lock:
            results.append(result)

    threads = [threading.Thread(target=invoke, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_TIMEOUT)
    return results
