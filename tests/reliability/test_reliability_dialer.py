"""The dialer through faults: a worker that is down, slow, failing, refusing, talking garbage or
streaming 100 MB; Redis killed, stalled, restarted, full, at maxclients or blackholed under a
stream of batches; and twenty concurrent invocations over overlapping, repeated batches."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest

from dialer_lambda import BatchResult, Dialer
from loadtest.servers import RedisServer, free_port
from loadtest.worker_stub import Behaviour, WorkerStub
from tests.support.dialer import FakeContext, MakeDialer, dialer_for, make_task, phone_of
from tests.support.faults import FAULT_SECONDS, FAULTS, RECOVERY_BOUND, start_fault
from tests.support.load import WAIT_TIMEOUT
from tests.support.measure import Measurement, Report
from tests.support.redelivery import (
    BATCH,
    INVOCATIONS,
    TASKS,
    accounted,
    dialed,
    invoke_concurrently,
    overlapping_batches,
)

pytestmark = pytest.mark.usefixtures("no_limiter_spans")

DIAL_TIMEOUT = 1.0
HUGE_BODY = 100 * 1024 * 1024
MEMORY_BOUND = 16 * 1024 * 1024
"""Bytes a batch may allocate while the worker streams a 100 MB reply."""


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def make_dialer(own_redis: RedisServer, stub: WorkerStub) -> Iterator[MakeDialer]:
    """``make_dialer(**env)``: a dialer on a redis-server of the test's own and the stub."""
    defaults = {
        "DIAL_TIMEOUT_SECONDS": str(DIAL_TIMEOUT),
        "RATE_LIMIT_MAX_WAIT_SECONDS": "2",
        "MAX_CPS": "1000",
    }
    factory = MakeDialer(stub.url, own_redis.url, defaults)
    yield factory
    factory.close()


# -- the worker misbehaving, one task each ---------------------------------------------------

MISBEHAVIOUR: dict[int, tuple[Behaviour, str, str | None, bool]] = {
    # index: (behaviour, status, error starts with, retried)
    4: (Behaviour(delay_ms=300), "successful", None, False),
    5: (Behaviour(timeout=1.0, hang_seconds=5), "failed", "Node.js Worker timeout", False),
    6: (Behaviour(http_500=1.0), "failed", "Node.js Worker HTTP 500", False),
    7: (Behaviour(http_429=1.0), "rateLimited", None, True),
    8: (Behaviour(http_503=1.0), "rateLimited", None, True),
    9: (Behaviour(garbage=1.0), "failed", "Node.js Worker reply is not JSON", False),
    10: (Behaviour(huge=1.0, huge_bytes=HUGE_BODY), "failed", "Node.js Worker reply larger", False),
    11: (Behaviour(close=1.0), "failed", "Node.js Worker connection error", False),
}
MIXED_BATCH = 12  # tasks 0-3 are answered normally


@pytest.fixture
def misbehaving(stub: WorkerStub, make_dialer: MakeDialer) -> Dialer:
    """A dialer against a worker that misbehaves, each way for one of the tasks."""
    for index, (behaviour, *_) in MISBEHAVIOUR.items():
        stub.set_behaviour(phone_of(index), behaviour)
    return make_dialer()


@pytest.fixture
def mixed_batch() -> list[dict[str, Any]]:
    return [make_task(index) for index in range(MIXED_BATCH)]


@pytest.mark.slow
def test_each_worker_fault_costs_only_its_own_task(
    misbehaving: Dialer, mixed_batch: list[dict[str, Any]]
) -> None:
    started = time.monotonic()
    result = misbehaving.process(mixed_batch, FakeContext())
    elapsed = time.monotonic() - started
    errors = {error["contactId"]: error["error"] for error in result["errors"]}
    for index, (_, status, reason, _retried) in MISBEHAVIOUR.items():
        if status == "failed":
            assert errors[f"contact-{index}"].startswith(str(reason)), index
    assert (result["successful"], result["failed"], result["rateLimited"]) == (5, 5, 2)
    assert accounted(result, MIXED_BATCH)
    assert elapsed < DIAL_TIMEOUT + 1.0  # the dials ran side by side, each within its timeout


@pytest.mark.slow
def test_only_the_tasks_the_worker_refused_come_back_for_a_retry(
    misbehaving: Dialer, mixed_batch: list[dict[str, Any]]
) -> None:
    result = misbehaving.process(mixed_batch, FakeContext())
    retried = {i for i, (_, _, _, again) in MISBEHAVIOUR.items() if again}
    assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == {
        f"m-{index}" for index in retried
    }


@pytest.mark.slow
def test_a_redelivered_batch_dials_only_the_refused_tasks_again(
    misbehaving: Dialer, stub: WorkerStub, mixed_batch: list[dict[str, Any]]
) -> None:
    misbehaving.process(mixed_batch, FakeContext())
    stub.reset()  # the worker is well again
    again = misbehaving.process(mixed_batch, FakeContext())
    counts = dialed(stub)
    assert (again["successful"], again["duplicates"]) == (2, MIXED_BATCH - 2)
    assert counts[("campaign-123", "contact-7")] == counts[("campaign-123", "contact-8")] == 1
    assert all(count == 1 for count in counts.values())


@pytest.mark.slow
def test_a_100_mb_reply_is_cut_short_with_bounded_memory(
    stub: WorkerStub, make_dialer: MakeDialer
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(huge=1.0, huge_bytes=HUGE_BODY)
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = dialer.process([make_task(0)], FakeContext())
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["failed"] == 1
    assert result["errors"][0]["error"].startswith("Node.js Worker reply larger than")
    assert peak < MEMORY_BOUND
    assert elapsed < DIAL_TIMEOUT


@pytest.mark.slow
def test_a_worker_that_is_down_gets_every_task_back_and_each_dialed_once_when_it_is_up(
    own_redis: RedisServer,
) -> None:
    port = free_port()
    env = {
        "REDIS_URL": own_redis.url,
        "NODE_WORKER_URL": f"http://127.0.0.1:{port}",
        "RATE_LIMIT_MAX_WAIT_SECONDS": "2",
    }
    batch = [make_task(index) for index in range(5)]
    with closing(dialer_for(env)) as dialer:
        down = dialer.process(batch, FakeContext())
        with WorkerStub(port=port) as stub:
            up = dialer.process(batch, FakeContext())
            again = dialer.process(batch, FakeContext())
            counts = dialed(stub)
    assert (down["failed"], len(down["batchItemFailures"])) == (5, 5)
    assert (up["successful"], again["duplicates"]) == (5, 5)
    assert sorted(counts.values()) == [1] * 5


# -- redelivery --------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_concurrent_overlapping_redeliveries_dial_every_task_exactly_once(
    stub: WorkerStub, make_dialer: MakeDialer
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(delay_ms=50)  # so that the invocations overlap in time
    results = invoke_concurrently(dialer, overlapping_batches())
    counts = dialed(stub)
    assert len(results) == INVOCATIONS
    assert all(accounted(r, BATCH) for r in results)
    assert sum(r["successful"] for r in results) == TASKS
    assert sum(r["duplicates"] for r in results) == INVOCATIONS * BATCH - TASKS
    assert len(counts) == TASKS
    assert set(counts.values()) == {1}


# -- Redis faults under a stream of batches ------------------------------------------------------

LOAD_BATCH = 3


@dataclass
class BatchSample:
    started: float
    seconds: float
    size: int
    result: BatchResult | None
    error: BaseException | None
    redis_unavailable: int
    events: list[str] = field(default_factory=list)

    @property
    def ended(self) -> float:
        return self.started + self.seconds


class BatchLoad:
    """One thread invoking a dialer with fresh batches back to back; each invocation's
    printed lines tell its RedisUnavailable metric and its log events (nothing else prints
    meanwhile: one invocation at a time, and its dials end before it returns)."""

    def __init__(self, dialer: Dialer, printed: Printed) -> None:
        self._dialer = dialer
        self._printed = printed
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._contacts = itertools.count()
        self.samples: list[BatchSample] = []
        self.batches: list[list[dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BatchLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_TIMEOUT)

    def _run(self) -> None:
        while not self._stop.is_set():
            tag = uuid.uuid4().hex[:6]
            batch = [
                make_task(0, contactId=f"load-{tag}-{next(self._contacts)}", messageId=tag + str(i))
                for i in range(LOAD_BATCH)
            ]
            started = time.monotonic()
            result: BatchResult | None = None
            error: BaseException | None = None
            try:
                result = self._dialer.process(batch, FakeContext())
            except Exception as exc:
                error = exc
            seconds = time.monotonic() - started
            lines = [json.loads(line) for line in self._printed.take()]
            emf = [line for line in lines if "_aws" in line]
            sample = BatchSample(
                started,
                seconds,
                len(batch),
                result,
                error,
                sum(int(line.get("RedisUnavailable", 0)) for line in emf),
                [str(line.get("event")) for line in lines if "event" in line],
            )
            with self._changed:
                self.samples.append(sample)
                self.batches.append(batch)
                self._changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float = WAIT_TIMEOUT) -> BatchSample:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for sample in self.samples:
                    if predicate(sample):
                        return sample
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no such batch")
                self._changed.wait(left)


@dataclass
class DialerFaultRun:
    fault: str
    loses_data: bool
    samples: list[BatchSample]
    injected: float
    back: float
    recovered: BatchSample
    redelivered: list[BatchResult]

    def during(self) -> list[BatchSample]:
        return [s for s in self.samples if self.injected <= s.started and s.ended <= self.back]

    def worst(self) -> float:
        return max(s.seconds for s in self.samples)


class Printed(io.TextIOBase):
    """Stands in for stdout (which the dialer's log lines and metrics go to) and hands out
    the complete lines written so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._text += text
        return len(text)

    def take(self) -> list[str]:
        with self._lock:
            *lines, self._text = self._text.split("\n")
        return [line for line in lines if line.strip()]


@pytest.fixture(scope="module", params=sorted(FAULTS))
def dialer_fault_run(request: pytest.FixtureRequest, fault_report: Report) -> DialerFaultRun:
    """A stream of batches through one Redis fault, held and healed, then the batches sent
    after recovery delivered again."""
    fault = start_fault(request.param)
    stub = WorkerStub().start()
    tag = uuid.uuid4().hex[:8]
    env = {
        "REDIS_URL": fault.url,
        "NODE_WORKER_URL": stub.url,
        "MAX_CPS": "1000",
        "RATE_LIMIT_MAX_WAIT_SECONDS": "2",
        "DIAL_TIMEOUT_SECONDS": str(DIAL_TIMEOUT),
        "CPS_KEY_PREFIX": f"f{tag}-cps",
        "IDEMPOTENCY_KEY_PREFIX": f"f{tag}-claim",
    }
    dialer = dialer_for(env)
    try:
        printed = Printed()
        with contextlib.redirect_stdout(printed), BatchLoad(dialer, printed) as load:
            load.wait_for(lambda s: s.redis_unavailable == 0)
            injected = time.monotonic()
            fault.inject()
            if fault.held:
                load.wait_for(lambda s: s.started >= injected and s.redis_unavailable > 0)
                time.sleep(max(0.0, injected + FAULT_SECONDS - time.monotonic()))
                fault.heal()
            back = time.monotonic()
            recovered = load.wait_for(lambda s: s.started >= back and s.redis_unavailable == 0)
        # Batches that ran with Redis again; the ones still inside the breaker's recovery time
        # dialed without claims (fail open), like those during the fault.
        after = [
            b
            for b, s in zip(load.batches, load.samples, strict=True)
            if s.started >= back and s.redis_unavailable == 0
        ]
        redelivered = [dialer.process(batch, FakeContext()) for batch in after]
    finally:
        dialer.close()
        stub.stop()
        fault.close()
    run = DialerFaultRun(
        request.param, fault.loses_data, load.samples, injected, back, recovered, redelivered
    )
    fault_report.add(
        Measurement(
            "dialer", run.fault, "fixed-open-batch-of-3",
            round(run.worst() * 1000, 1), round((recovered.ended - back) * 1000, 1),
            len(run.samples), sum(1 for s in run.samples if s.redis_unavailable),
        )
    )  # fmt: skip
    return run


@pytest.mark.slow
def test_through_a_redis_fault_no_invocation_raises_and_every_task_is_accounted_for(
    dialer_fault_run: DialerFaultRun,
) -> None:
    assert [s.error for s in dialer_fault_run.samples if s.error] == []
    assert all(
        s.result is not None and accounted(s.result, s.size) for s in dialer_fault_run.samples
    )


@pytest.mark.slow
def test_while_redis_is_broken_the_calls_still_go_out_and_the_metric_and_log_say_so(
    dialer_fault_run: DialerFaultRun,
) -> None:
    broken = [s for s in dialer_fault_run.samples if s.redis_unavailable]
    assert broken or dialer_fault_run.fault == "restarted_empty"
    assert all(s.result is not None and s.result["successful"] == s.size for s in broken)
    assert all("redis_unavailable" in s.events for s in broken)


@pytest.mark.slow
def test_a_batch_through_a_redis_fault_takes_at_most_three_redis_timeouts(
    dialer_fault_run: DialerFaultRun,
) -> None:
    # Claim, permits and release each meet Redis once; the dials themselves answer at once.
    assert dialer_fault_run.worst() <= 3 * 0.25


@pytest.mark.slow
def test_the_dialer_is_back_on_redis_within_a_second_of_it_returning(
    dialer_fault_run: DialerFaultRun,
) -> None:
    assert dialer_fault_run.recovered.ended - dialer_fault_run.back <= RECOVERY_BOUND


@pytest.mark.slow
def test_batches_sent_after_recovery_are_duplicates_when_delivered_again(
    dialer_fault_run: DialerFaultRun,
) -> None:
    redelivered = dialer_fault_run.redelivered
    assert redelivered
    assert all(r["duplicates"] == r["totalProcessed"] for r in redelivered)
