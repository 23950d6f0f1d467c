"""A limiter's manners on a client it shares: a dropped limiter leaves the pool whole, a script
Redis lost is loaded without a second connection, and a host clock that disagrees with Redis is
corrected, never failed open."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cps_limiter import AsyncLimiter, Decision, FixedWindow, Limiter
from tests.conftest import LONG
from tests.support.logs import captured

KINDS = ["sync", "async"]
POOL = 10
LIMIT = 5
SKEW_SECONDS = -1.5
"""A host clock this far behind Redis's makes every request look older than its lifetime."""


def _client(kind: str, url: str, connections: int) -> Any:
    if kind == "sync":
        return redis.Redis(
            connection_pool=redis.ConnectionPool.from_url(url, max_connections=connections)
        )
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool.from_url(url, max_connections=connections)
    )


async def _dropped_async_limiters(client: Any, prefix: str, count: int) -> bool:
    async def request() -> None:
        limiter = AsyncLimiter(client, FixedWindow(100, window=LONG), prefix=prefix)
        assert (await limiter.acquire()).allowed

    # Each request is a task of its own, as a web framework runs them.
    for _ in range(count):
        await asyncio.create_task(request())
    pong: bool = await client.ping()
    await client.aclose()
    return pong


@pytest.mark.parametrize("kind", KINDS)
def test_limiters_dropped_without_close_leave_the_shared_pool_to_the_application(
    kind: str, redis_url: str, prefix: str
) -> None:
    client = _client(kind, redis_url, POOL)
    if kind == "async":
        assert asyncio.run(_dropped_async_limiters(client, prefix, POOL + 2))
        return
    for _ in range(POOL + 2):
        assert Limiter(client, FixedWindow(100, window=LONG), prefix=prefix).acquire().allowed
    try:
        assert client.ping()
    finally:
        client.close()


def _flushed(kind: str, url: str, prefix: str) -> list[Decision]:
    """The decisions of a limiter on a one-connection pool: one before Redis loses its
    scripts, the rest after."""
    client = _client(kind, url, 1)
    flusher = redis.Redis.from_url(url)
    strategy = FixedWindow(LIMIT, window=LONG)
    try:
        if kind == "sync":
            limiter = Limiter(client, strategy, prefix=prefix)
            decisions = [limiter.acquire()]
            flusher.script_flush()
            decisions += [limiter.acquire() for _ in range(2 * LIMIT)]
            limiter.close()
            client.close()
            return decisions

        async def run() -> list[Decision]:
            limiter = AsyncLimiter(client, strategy, prefix=prefix)
            decisions = [await limiter.acquire()]
            flusher.script_flush()
            decisions += [await limiter.acquire() for _ in range(2 * LIMIT)]
            await limiter.aclose()
            await client.aclose()
            return decisions

        return asyncio.run(run())
    finally:
        flusher.close()


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_redis_lost_are_loaded_again_on_a_one_connection_pool(
    kind: str, redis_url: str, prefix: str
) -> None:
    decisions = _flushed(kind, redis_url, prefix)
    assert not any(decision.fail_open for decision in decisions)
    assert sum(decision.granted for decision in decisions) == LIMIT


@pytest.fixture
def host_clock_behind_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cps_limiter module's ``time`` reads a wall clock ``SKEW_SECONDS`` off; the
    monotonic clock, Redis and the rest of the process are untouched."""
    skewed = types.SimpleNamespace(
        **{name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    )
    skewed.time = lambda: time.time() + SKEW_SECONDS
    skewed.time_ns = lambda: time.time_ns() + int(SKEW_SECONDS * 1e9)
    for name, module in list(sys.modules.items()):
        if name.startswith("cps_limiter") and getattr(module, "time", None) is time:
            monkeypatch.setattr(module, "time", skewed)


def _decisions(kind: str, url: str, prefix: str, count: int) -> tuple[list[Decision], bool]:
    """``count`` decisions of a limiter of ``kind``, and whether its breaker lets calls
    through afterwards."""
    strategy = FixedWindow(LIMIT, window=LONG)
    if kind == "sync":
        with Limiter.from_url(url, strategy, prefix=prefix) as limiter:
            return [limiter.acquire() for _ in range(count)], limiter._backend._breaker.allow()

    async def run() -> tuple[list[Decision], bool]:
        async with AsyncLimiter.from_url(url, strategy, prefix=prefix) as limiter:
            decisions = [await limiter.acquire() for _ in range(count)]
            return decisions, limiter._backend._breaker.allow()

    return asyncio.run(run())


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    with captured("cps_limiter") as records:
        yield records.records


@pytest.mark.usefixtures("host_clock_behind_redis")
@pytest.mark.parametrize("kind", KINDS)
def test_a_host_clock_behind_redis_is_reported_and_corrected_never_failed_open(
    kind: str, redis_url: str, prefix: str, warnings: list[logging.LogRecord]
) -> None:
    decisions, breaker_closed = _decisions(kind, redis_url, prefix, 50)
    assert sum(decision.granted for decision in decisions) == LIMIT
    assert not any(decision.fail_open for decision in decisions)
    assert breaker_closed
    (skew,) = [r for r in warnings if hasattr(r, "cps_limiter_clock_skew")]
    assert skew.levelno == logging.WARNING
    assert skew.cps_limiter_clock_skew == pytest.approx(-SKEW_SECONDS, abs=0.25)
