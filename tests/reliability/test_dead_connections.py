"""A limiter whose pooled connection died while Redis stayed well, and a Redis really down.

A connection can die idle (Redis closed it, a NAT dropped its flow, a sandbox froze): the next
call on it fails at once, or after the socket timeout, though Redis answers new connections.
Such a call is sent once more on a fresh connection, so the decision is Redis's, not a
fail-open one. A Redis that is really down still costs a decision no more than 250 ms, and once
the breaker opens, microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from cps_limiter import FixedWindow
from loadtest.servers import RedisServer
from tests.conftest import SyncFacade
from tests.support.connections import KILLS, killer
from tests.support.faults import DECISION_BOUND
from tests.support.proxy import BlackholeProxy

LIMIT = 10
LONG = 3600
"""A window longer than the test: the counter only moves by the test's own decisions."""
BREAKER_DECISIONS = 200
FAST = 0.001
"""Seconds a decision costs, at most on average, once the breaker is open."""

MakeLimiterOn = Callable[..., SyncFacade]


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[BlackholeProxy]:
    with BlackholeProxy(redis_server.port) as running:
        yield running


@pytest.fixture(params=KILLS)
def dying(
    request: pytest.FixtureRequest,
    redis_url: str,
    proxy: BlackholeProxy,
    raw_redis: redis.Redis,
    prefix: str,
) -> tuple[str, Callable[[], None]]:
    """The URL a limiter connects to, and what kills the connections it holds then."""
    return killer(request.param, redis_url, proxy, raw_redis, prefix)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it kills."""
    server = RedisServer().start()
    yield server
    server.cleanup()


def counted(raw_redis: redis.Redis, prefix: str) -> int:
    """The permits in the fixed window's counters of ``prefix``."""
    return sum(int(raw_redis.get(key) or 0) for key in raw_redis.keys(f"{prefix}:[0-9]*"))


def test_after_its_connection_died_the_next_decision_is_answered_by_redis(
    make_limiter_on: MakeLimiterOn,
    dying: tuple[str, Callable[[], None]],
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    url, kill_pooled = dying
    limiter = make_limiter_on(url, FixedWindow(LIMIT, window=LONG))
    first = limiter.acquire()
    kill_pooled()
    second = limiter.acquire()
    assert (first.fail_open, second.fail_open) == (False, False)
    assert (second.allowed, second.remaining) == (True, LIMIT - 2)
    assert counted(raw_redis, prefix) == 2


def test_after_its_connection_died_run_is_answered_by_redis(
    make_limiter_on: MakeLimiterOn,
    dying: tuple[str, Callable[[], None]],
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    url, kill_pooled = dying
    limiter = make_limiter_on(url, FixedWindow(LIMIT, window=LONG))
    limiter.acquire()
    kill_pooled()
    assert limiter.run(lambda client: client.set(f"{prefix}:mine", "kept"))
    assert raw_redis.get(f"{prefix}:mine") == "kept"


def test_a_killed_redis_costs_a_decision_at_most_250_ms_then_the_breaker_answers(
    make_limiter_on: MakeLimiterOn, own_redis: RedisServer
) -> None:
    limiter = make_limiter_on(own_redis.url, FixedWindow(LIMIT, window=LONG), recovery_time=30.0)
    assert not limiter.acquire().fail_open
    own_redis.kill()
    timed = []
    for _ in range(3):  # the breaker's threshold
        started = time.perf_counter()
        decision = limiter.acquire()
        timed.append((time.perf_counter() - started, decision))
    # Back, but the open breaker does not ask it: decisions stay fail-open and cheap.
    own_redis.start()
    started = time.perf_counter()
    later = [limiter.acquire() for _ in range(BREAKER_DECISIONS)]
    per_decision = (time.perf_counter() - started) / BREAKER_DECISIONS
    assert all(decision.fail_open for _, decision in timed)
    assert max(seconds for seconds, _ in timed) <= DECISION_BOUND
    assert all(decision.fail_open for decision in later)
    assert per_decision < FAST
