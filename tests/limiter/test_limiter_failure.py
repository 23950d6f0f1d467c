"""Fail-open and fail-closed: a dead, stalled or restarted Redis never stalls or breaks a caller."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cps_limiter import (
    AsyncLimiter,
    BackendUnavailable,
    FixedWindow,
    Limiter,
    PacedWindow,
    SlidingWindow,
)
from cps_limiter._backend import Backend
from cps_limiter._breaker import CircuitBreaker
from loadtest.servers import RedisServer, free_port, stalled_listener
from tests.conftest import LASTING, LONG, STRATEGIES

DECISION_BOUND = 0.25  # the contract's ceiling for one decision


@pytest.fixture
def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def stalled_url() -> Iterator[str]:
    with stalled_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(params=["dead", "stalled"])
def broken_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def timed(limiter: Limiter, **kwargs: object) -> tuple[float, object]:
    started = time.perf_counter()
    decision = limiter.acquire(**kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - started, decision


def test_fail_open_allows_and_says_so(broken_url: str, strategy_name: str) -> None:
    limiter = Limiter.from_url(broken_url, STRATEGIES[strategy_name](10))
    elapsed, decision = timed(limiter, permits=3)
    assert decision == decision.__class__(
        allowed=True, granted=3, limit=10, remaining=7, retry_after=0.0, reset_after=0.0,
        fail_open=True,
    )  # fmt: skip
    assert elapsed < DECISION_BOUND


async def test_async_fail_open_within_the_bound(broken_url: str, strategy_name: str) -> None:
    limiter = AsyncLimiter.from_url(broken_url, STRATEGIES[strategy_name](10))
    started = time.perf_counter()
    decision = await limiter.acquire()
    assert decision.fail_open
    assert decision.allowed
    assert time.perf_counter() - started < DECISION_BOUND
    await limiter.aclose()


def test_fail_closed_raises_backend_unavailable(broken_url: str) -> None:
    limiter = Limiter.from_url(broken_url, FixedWindow(10), fail_mode="closed")
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable, match="Redis unavailable"):
        limiter.acquire()
    assert time.perf_counter() - started < DECISION_BOUND


async def test_async_fail_closed_raises_backend_unavailable(broken_url: str) -> None:
    limiter = AsyncLimiter.from_url(broken_url, FixedWindow(10), fail_mode="closed")
    with pytest.raises(BackendUnavailable):
        await limiter.acquire()
    await limiter.aclose()


def test_fail_open_logs_a_warning(dead_url: str, caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter.from_url(dead_url, FixedWindow(10))
    with caplog.at_level(logging.WARNING, logger="cps_limiter"):
        limiter.acquire()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "failing open" in record.getMessage()


def test_an_outage_logs_a_line_a_second_not_one_per_decision(
    dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = Limiter.from_url(dead_url, FixedWindow(10))
    with caplog.at_level(logging.WARNING, logger="cps_limiter"):
        for _ in range(50):
            limiter.acquire()
    assert len(caplog.records) == 1


def test_while_redis_stays_down_decisions_cost_microseconds(stalled_url: str) -> None:
    limiter = Limiter.from_url(stalled_url, FixedWindow(10), recovery_time=30.0)
    for _ in range(3):  # the breaker's threshold: each pays a timeout
        limiter.acquire()
    started = time.perf_counter()
    decisions = [limiter.acquire() for _ in range(1000)]
    per_decision = (time.perf_counter() - started) / 1000
    assert all(d.fail_open for d in decisions)
    assert per_decision < 0.001


def test_peek_and_reset_fail_open_quietly(dead_url: str) -> None:
    limiter = Limiter.from_url(dead_url, FixedWindow(10))
    peeked = limiter.peek()
    assert (peeked.allowed, peeked.granted, peeked.fail_open) == (True, 0, True)
    limiter.reset()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [FixedWindow(5, window=3600), SlidingWindow(5, window=3600)])
def test_a_restart_fails_open_then_is_exact_again(
    own_redis: RedisServer, strategy: FixedWindow | SlidingWindow
) -> None:
    limiter = Limiter.from_url(own_redis.url, strategy, recovery_time=0.2, deny_cache=False)
    assert limiter.acquire(permits=5).allowed
    assert not limiter.acquire().allowed

    own_redis.stop()
    during = [limiter.acquire() for _ in range(5)]
    assert all(d.allowed and d.fail_open for d in during)

    own_redis.start()  # empty: counters and scripts are gone
    deadline = time.monotonic() + 1.0
    decision = limiter.acquire()
    while decision.fail_open and time.monotonic() < deadline:
        decision = limiter.acquire()
    assert not decision.fail_open, "still failing open a second after Redis came back"
    granted = decision.granted + sum(limiter.acquire().granted for _ in range(10))
    assert granted == 5


async def test_sync_and_async_give_the_same_decisions(redis_url: str, prefix: str) -> None:
    for name, make in LASTING.items():
        sync = Limiter.from_url(redis_url, make(4), prefix=f"{prefix}s{name}", deny_cache=False)
        asyn = AsyncLimiter.from_url(
            redis_url, make(4), prefix=f"{prefix}a{name}", deny_cache=False
        )
        requests = [(1, False), (2, False), (3, False), (3, True), (1, False), (0, False)]
        for permits, partial in requests:
            a = sync.acquire(permits=permits, partial=partial)
            b = await asyn.acquire(permits=permits, partial=partial)
            assert (a.allowed, a.granted, a.limit, a.remaining) == (
                b.allowed,
                b.granted,
                b.limit,
                b.remaining,
            ), (name, permits, partial)
        await asyn.aclose()
        sync.close()


async def test_async_callers_in_flight_share_one_limit(redis_url: str, prefix: str) -> None:
    # Generous timeouts: this is about exactness, and a loaded machine may take longer than the
    # default 0.1 s to open 64 connections at once, or to free one for the callers queued
    # behind them (which would fail some decisions open).
    limiter = AsyncLimiter.from_url(
        redis_url,
        FixedWindow(50, window=3600),
        prefix=prefix,
        decision_timeout=5.0,
        socket_connect_timeout=2.0,
        socket_timeout=2.0,
        timeout=2.0,  # the pool's wait for a free connection
    )
    decisions = await asyncio.gather(*(limiter.acquire() for _ in range(200)))
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == 50
    await limiter.aclose()


@pytest.mark.parametrize("name", sorted(LASTING))
def test_the_deny_cache_answers_an_exhausted_key_without_redis(
    redis_url: str, prefix: str, name: str
) -> None:
    limiter = Limiter.from_url(redis_url, LASTING[name](3), prefix=prefix)
    assert limiter.acquire(permits=3).allowed
    first = limiter.acquire()
    assert not first.allowed
    limiter.client.connection_pool.disconnect()
    limiter.client.connection_pool.connection_kwargs["port"] = free_port()  # Redis is gone
    cached = [limiter.acquire() for _ in range(100)]
    assert not any(d.allowed or d.fail_open for d in cached)
    assert all(0 < d.retry_after <= first.retry_after for d in cached)


@pytest.mark.parametrize("name", sorted(LASTING))
def test_a_cached_denial_says_what_redis_would(redis_url: str, prefix: str, name: str) -> None:
    cached = Limiter.from_url(redis_url, LASTING[name](3), prefix=prefix)
    asking = Limiter.from_url(redis_url, LASTING[name](3), prefix=prefix, deny_cache=False)
    cached.acquire(permits=3)
    cached.acquire()  # denied by Redis, and kept
    from_cache, from_redis = cached.acquire(), asking.acquire()
    assert from_cache.retry_after == pytest.approx(from_redis.retry_after, abs=0.1)
    assert from_cache.reset_after == pytest.approx(from_redis.reset_after, abs=0.1)


TRUTHFUL = {
    **LASTING,
    # One permit fills it: the next is 1,200 s away.
    "paced": lambda limit: PacedWindow(limit, window=LONG),
}
ASKS: dict[str, dict[str, Any]] = {
    "repeated": {},
    "larger": {"permits": 2},
    "partial": {"permits": 2, "partial": True},
}


@pytest.mark.parametrize("ask", sorted(ASKS))
@pytest.mark.parametrize("name", sorted(TRUTHFUL))
def test_a_cached_denial_reports_what_redis_answers_within_10_ms(
    redis_url: str, prefix: str, name: str, ask: str
) -> None:
    strategy = TRUTHFUL[name](3)
    cached = Limiter.from_url(redis_url, strategy, prefix=prefix)
    asking = Limiter.from_url(redis_url, strategy, prefix=prefix, deny_cache=False)
    cached.acquire(permits=1 if name == "paced" else 3)
    assert not cached.acquire().allowed  # denied by Redis, and kept

    from_cache, from_redis = cached.acquire(**ASKS[ask]), asking.acquire(**ASKS[ask])

    assert (from_cache.allowed, from_redis.allowed) == (False, False)
    assert from_cache.retry_after == pytest.approx(from_redis.retry_after, abs=0.01)
    assert from_cache.reset_after == pytest.approx(from_redis.reset_after, abs=0.01)


def _sent(error: Exception) -> int:
    """How many times one call is sent to a client whose every attempt fails with ``error``."""
    sent = 0

    def operation(client: object) -> None:
        nonlocal sent
        sent += 1
        raise error

    backend = Backend(object(), CircuitBreaker(), deadline=None)
    with pytest.raises(BackendUnavailable):
        backend.call(operation)
    return sent


async def _asent(error: Exception) -> int:
    sent = 0

    async def operation(client: object) -> None:
        nonlocal sent
        sent += 1
        raise error

    backend = Backend(object(), CircuitBreaker(), deadline=1.0)
    with pytest.raises(BackendUnavailable):
        await backend.acall(operation)
    return sent


def test_a_call_whose_connection_was_reset_is_sent_once_more() -> None:
    assert _sent(redis.ConnectionError("Connection reset by peer")) == 2


def test_a_sync_call_that_found_every_connection_busy_is_not_sent_again() -> None:
    # Queueing for the pool a second time would double a crowd's wait on a stalled Redis.
    assert _sent(redis.ConnectionError("No connection available.")) == 1


async def test_an_async_call_that_found_every_connection_busy_queues_once_more() -> None:
    # Its own deadline bounds it, and a cold burst of coroutines gets its connections opened.
    assert await _asent(redis.ConnectionError("No connection available.")) == 2


def test_a_refused_connection_is_not_tried_again_within_the_decision(
    dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A retry is for a connection that died while idle; where nothing listens, a fresh
    # connection is refused too, and on a cluster each refusal rebuilds the slot map.
    attempts: list[int] = []
    connect = redis.connection.AbstractConnection.connect

    def counted(connection: Any) -> None:
        attempts.append(connection.port)
        connect(connection)

    limiter = Limiter.from_url(dead_url, FixedWindow(10))
    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", counted)
    decision = limiter.acquire()
    assert decision.fail_open
    assert len(attempts) == 1
