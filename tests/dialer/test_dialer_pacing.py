"""Pacing through the CPS limit, exactly-once dials under redelivery, and Redis outages."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from dialer_lambda import Dialer
from loadtest.servers import RedisServer, free_port, stalled_listener
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, Lines, MakeDialer, make_batch

BATCH = 10
LIMIT = 5


def _window_counts(dialer: Dialer, prefix: str = "cps") -> dict[int, int]:
    """The fixed window's counters, ``{window_start: permits}``, read from the limiter's Redis."""
    client = dialer.limiter.client
    counts: dict[int, int] = {}
    for key in client.scan_iter(match=f"{prefix}:[0-9]*"):
        name = key.decode() if isinstance(key, bytes) else key
        counts[int(name.rsplit(":", 1)[1])] = int(client.get(key))
    return counts


def test_with_a_wait_budget_five_are_dialed_now_and_five_paced_into_the_next_second(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="2", CPS_STRATEGY="fixed")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == BATCH
    assert result["batchItemFailures"] == []
    assert len(stub.calls) == BATCH
    windows = _window_counts(dialer)
    assert list(windows.values()) == [LIMIT, LIMIT]
    first, second = sorted(windows)
    assert second == first + 1


def test_the_paced_half_waits_for_the_next_window_in_one_more_limiter_call(
    make_dialer: MakeDialer, lines: Lines
) -> None:
    dialer = make_dialer(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="2", CPS_STRATEGY="fixed")

    dialer.process(make_batch(BATCH), FakeContext())

    checks = lines.events("cps_check")
    assert [(c["requested"], c["granted"]) for c in checks] == [(10, 5), (5, 5)]


def test_without_a_wait_budget_five_are_dialed_and_five_come_back_in_batch_item_failures(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    # The fixed window is left out on purpose: a batch that straddles a window boundary may
    # get its second five at once, which is exactly the burst that strategy allows. The token
    # bucket paces one call per 1/MAX_CPS instead (below).
    dialer = make_dialer(
        MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding"
    )

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert (result["successful"], result["rateLimited"]) == (LIMIT, BATCH - LIMIT)
    assert result["batchItemFailures"] == [{"itemIdentifier": f"m-{n}"} for n in range(5, 10)]
    assert result["errors"] == []
    assert len(stub.calls) == LIMIT


@pytest.mark.parametrize("strategy", ["fixed", "paced", "sliding", "token"])
def test_without_a_wait_budget_a_short_grant_is_the_batchs_only_limiter_call(
    make_dialer: MakeDialer, lines: Lines, strategy: str
) -> None:
    # Asking again at once could only catch a window that opened in between: a second five
    # for the fixed window when the batch straddles a boundary, decided by chance.
    dialer = make_dialer(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY=strategy)

    result = dialer.process(make_batch(BATCH), FakeContext())

    checks = [(c["requested"], c["granted"]) for c in lines.events("cps_check")]
    assert len(checks) == 1
    assert checks[0][0] == BATCH
    assert result["successful"] == checks[0][1] < BATCH


def test_the_token_bucket_spaces_calls_evenly_and_never_bursts(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="2", CPS_STRATEGY="token")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == BATCH
    times = sorted(call.monotonic for call in stub.calls)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 1 / MAX_CPS = 0.2 s apart, less what thread scheduling shifts a dial by
    assert min(gaps) > 0.15
    assert times[-1] - times[0] == pytest.approx(1.8, abs=0.15)


def test_without_a_wait_budget_the_token_bucket_dials_one_and_returns_the_rest(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="token")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert (result["successful"], result["rateLimited"]) == (1, BATCH - 1)
    assert len(stub.calls) == 1


@pytest.mark.parametrize(("cpu", "dialed"), [(50.0, 8), (85.0, 4), (95.0, 2)])
def test_the_pace_follows_the_reported_cpu_of_the_dialing_host(
    make_dialer: MakeDialer, stub: WorkerStub, cpu: float, dialed: int
) -> None:
    dialer = make_dialer(MAX_CPS="8", RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding")
    dialer.limiter.report_health(cpu=cpu)

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == dialed
    assert len(stub.calls) == dialed


def test_an_operators_cap_overrides_max_cps_without_a_redeploy(make_dialer: MakeDialer) -> None:
    dialer = make_dialer(MAX_CPS="100", RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding")
    dialer.limiter.set_cap(3, ttl=60)

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert (result["successful"], result["rateLimited"]) == (3, BATCH - 3)


def test_rate_limited_tasks_are_dialed_when_redelivered_later(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(
        MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding"
    )
    dialer.process(make_batch(BATCH), FakeContext())
    dialer = make_dialer(
        MAX_CPS="100",
        RATE_LIMIT_MAX_WAIT_SECONDS="0",
        CPS_STRATEGY="sliding",
    )

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert (result["successful"], result["duplicates"]) == (BATCH - LIMIT, LIMIT)
    assert sorted(call.phone_number or "" for call in stub.calls) == sorted(
        task["phoneNumber"] for task in make_batch(BATCH)
    )


def test_a_batch_delivered_three_times_dials_each_task_once(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()

    results = [dialer.process(make_batch(BATCH), FakeContext()) for _ in range(3)]

    assert [r["successful"] for r in results] == [BATCH, 0, 0]
    assert [r["duplicates"] for r in results] == [0, BATCH, BATCH]
    _assert_each_dialed_once(stub, make_batch(BATCH))


def test_two_batches_with_the_same_tasks_delivered_concurrently_dial_each_task_once(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(delay_ms=50)
    barrier = threading.Barrier(2)

    def deliver(_: int) -> dict[str, Any]:
        barrier.wait()
        return dict(dialer.process(make_batch(BATCH), FakeContext()))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(deliver, range(2)))

    assert sum(r["successful"] for r in results) == BATCH
    assert sum(r["duplicates"] for r in results) == BATCH
    _assert_each_dialed_once(stub, make_batch(BATCH))


def test_the_same_task_twice_in_one_batch_is_dialed_once(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    batch = make_batch(2)
    batch.append(dict(batch[0], messageId="m-again"))

    result = dialer.process(batch, FakeContext())

    assert (result["successful"], result["duplicates"]) == (2, 1)
    _assert_each_dialed_once(stub, batch)


def test_a_new_attempt_of_a_dialed_task_is_dialed(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    dialer.process(make_batch(1), FakeContext())

    result = dialer.process(make_batch(1, attempts=1), FakeContext())

    assert result["successful"] == 1
    assert len(stub.calls) == 2


def _assert_each_dialed_once(stub: WorkerStub, batch: list[dict[str, Any]]) -> None:
    dialed = sorted(call.phone_number or "" for call in stub.calls)
    assert dialed == sorted({task["phoneNumber"] for task in batch})


def test_with_redis_unreachable_the_calls_still_go_out(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == BATCH
    assert len(stub.calls) == BATCH


def test_with_redis_unreachable_the_metric_and_a_warning_say_so(
    make_dialer: MakeDialer, lines: Lines
) -> None:
    dialer = make_dialer(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    dialer.process(make_batch(BATCH), FakeContext())

    [emf] = lines.emf()
    assert emf["RedisUnavailable"] >= 2  # the claims and the permits both failed open
    warnings = lines.events("redis_unavailable")
    assert {w["operation"] for w in warnings} >= {"claim", "acquire"}
    assert all(w["level"] == "WARNING" for w in warnings)


def test_with_redis_stalled_a_batch_still_finishes_promptly(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    with stalled_listener() as port:
        dialer = make_dialer(REDIS_URL=f"redis://127.0.0.1:{port}/0", CPS_FAIL_MODE="open")
        started = time.monotonic()
        result = dialer.process(make_batch(BATCH), FakeContext())
        elapsed = time.monotonic() - started

    assert result["successful"] == BATCH
    assert elapsed < 1.0


def test_with_redis_stalled_the_default_paces_the_batch_at_its_share_of_the_limit(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    with stalled_listener() as port:
        # 20 per second shared by 2 containers: this one dials 10 per second, 0.1 s apart.
        dialer = make_dialer(
            REDIS_URL=f"redis://127.0.0.1:{port}/0", MAX_CPS="20", CPS_FALLBACK_CONTAINERS="2"
        )
        result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == BATCH
    arrivals = sorted(call.monotonic for call in stub.calls)
    # Ten calls 0.1 s apart span 0.9 s (unbounded, they would leave at once); a late thread
    # may narrow one gap, never the whole span.
    assert arrivals[-1] - arrivals[0] >= 0.85


def test_with_redis_unreachable_and_fail_closed_nothing_is_dialed_and_all_come_back(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CPS_FAIL_MODE="closed")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["rateLimited"] == BATCH
    assert len(result["batchItemFailures"]) == BATCH
    assert stub.calls == []


# -- on a real redis-server ----------------------------------------------------------------


@pytest.fixture
def key_prefixes() -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {"CPS_KEY_PREFIX": f"t{tag}:cps", "IDEMPOTENCY_KEY_PREFIX": f"t{tag}:claim"}


@pytest.fixture
def real_redis(
    make_dialer: MakeDialer, redis_server: RedisServer, key_prefixes: dict[str, str]
) -> MakeDialer:
    """Dialers on the session's redis-server, with key prefixes of this test's own."""
    make_dialer.redis_url = redis_server.url
    make_dialer.defaults.update(key_prefixes)
    return make_dialer


@pytest.mark.redis
def test_on_real_redis_five_are_dialed_now_and_five_paced_into_the_next_second(
    real_redis: MakeDialer, key_prefixes: dict[str, str]
) -> None:
    dialer = real_redis(MAX_CPS=str(LIMIT), RATE_LIMIT_MAX_WAIT_SECONDS="2", CPS_STRATEGY="fixed")

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result["successful"] == BATCH
    windows = _window_counts(dialer, key_prefixes["CPS_KEY_PREFIX"])
    assert list(windows.values()) == [LIMIT, LIMIT]


@pytest.mark.redis
def test_on_real_redis_concurrent_redeliveries_dial_each_task_once(
    real_redis: MakeDialer, stub: WorkerStub
) -> None:
    dialer = real_redis(MAX_CPS="1000")
    barrier = threading.Barrier(4)

    def deliver(_: int) -> int:
        barrier.wait()
        return dialer.process(make_batch(BATCH), FakeContext())["successful"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(deliver, range(4))) == BATCH
    _assert_each_dialed_once(stub, make_batch(BATCH))


@pytest.mark.redis
def test_on_real_redis_a_claim_lives_for_the_idempotency_ttl(
    real_redis: MakeDialer, redis_server: RedisServer, key_prefixes: dict[str, str]
) -> None:
    dialer = real_redis(IDEMPOTENCY_TTL_SECONDS="3600")

    dialer.process(make_batch(1), FakeContext())

    client: Any = redis.Redis(port=redis_server.port)
    [key] = client.keys(f"{key_prefixes['IDEMPOTENCY_KEY_PREFIX']}:*")
    assert 3590 <= client.ttl(key) <= 3600
    client.close()
