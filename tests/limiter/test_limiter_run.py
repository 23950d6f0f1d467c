"""One boundary between a limiter and Redis: ``run`` for callers' own data, and the limiter's
decisions, share its circuit breaker, its deadline and its translation of errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from cps_limiter import AsyncLimiter, BackendUnavailable, FixedWindow, Limiter
from loadtest.servers import free_port

THRESHOLD = 3


class UnplannedFailure:
    """A client whose library fails in a way nobody planned for, as redis-py 5.0.8's cluster
    ``SCRIPT LOAD`` did (``ValueError: range() arg 3 must not be zero``)."""

    def __init__(self) -> None:
        self.calls = 0

    def evalsha(self, *args: Any) -> Any:
        self.calls += 1
        raise ValueError("range() arg 3 must not be zero")


class AsyncUnplannedFailure(UnplannedFailure):
    async def evalsha(self, *args: Any) -> Any:  # type: ignore[override]
        return super().evalsha(*args)


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_run_returns_what_the_operation_returns(redis_url: str, prefix: str) -> None:
    with Limiter.from_url(redis_url, FixedWindow(1), prefix=prefix) as limiter:
        assert limiter.run(lambda client: client.set(f"{prefix}:mine", "1", nx=True)) is True
        assert limiter.run(lambda client: client.get(f"{prefix}:mine")) == b"1"


def test_run_raises_backend_unavailable_from_the_redis_error() -> None:
    limiter = Limiter.from_url(dead_url(), FixedWindow(1))
    with pytest.raises(BackendUnavailable, match="Redis unavailable") as raised:
        limiter.run(lambda client: client.get("anything"))
    assert isinstance(raised.value.__cause__, redis.ConnectionError)


def test_failures_in_run_open_the_breaker_that_decisions_use() -> None:
    limiter = Limiter.from_url(dead_url(), FixedWindow(1), recovery_time=30.0)
    for _ in range(THRESHOLD):
        with pytest.raises(BackendUnavailable):
            limiter.run(lambda client: client.get("anything"))
    calls: list[object] = []
    with pytest.raises(BackendUnavailable, match="circuit open"):
        limiter.run(calls.append)
    assert calls == []
    assert limiter.acquire().fail_open


def test_a_success_in_run_closes_the_breaker(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(1), prefix=prefix, failure_threshold=2)

    def fails(client: Any) -> None:
        raise redis.ConnectionError("lost")

    limiter.run(lambda client: client.ping())
    with pytest.raises(BackendUnavailable):
        limiter.run(fails)
    limiter.run(lambda client: client.ping())  # the failures in a row start over
    with pytest.raises(BackendUnavailable):
        limiter.run(fails)
    assert limiter.run(lambda client: client.ping()) is True


async def test_async_run_awaits_the_operation(redis_url: str, prefix: str) -> None:
    async with AsyncLimiter.from_url(redis_url, FixedWindow(1), prefix=prefix) as limiter:
        await limiter.run(lambda client: client.set(f"{prefix}:mine", "2"))
        assert await limiter.run(lambda client: client.get(f"{prefix}:mine")) == b"2"


async def test_async_run_has_the_decision_deadline(redis_url: str, prefix: str) -> None:
    limiter = AsyncLimiter.from_url(redis_url, FixedWindow(1), prefix=prefix, decision_timeout=0.05)

    async def stalls(client: Any) -> None:
        await asyncio.sleep(1.0)

    with pytest.raises(BackendUnavailable, match="TimeoutError"):
        await limiter.run(stalls)
    await limiter.aclose()


def test_an_unplanned_client_error_fails_a_decision_open_and_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = Limiter(UnplannedFailure(), FixedWindow(10))
    with caplog.at_level(logging.WARNING, logger="cps_limiter"):
        decision = limiter.acquire(permits=2)
    assert (decision.allowed, decision.granted, decision.fail_open) == (True, 2, True)
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], ValueError)


async def test_an_unplanned_client_error_fails_an_async_decision_open() -> None:
    limiter = AsyncLimiter(AsyncUnplannedFailure(), FixedWindow(10))
    decision = await limiter.acquire()
    assert (decision.allowed, decision.fail_open) == (True, True)


def test_an_unplanned_client_error_is_backend_unavailable_when_failing_closed() -> None:
    limiter = Limiter(UnplannedFailure(), FixedWindow(10), fail_mode="closed")
    with pytest.raises(BackendUnavailable, match="ValueError") as raised:
        limiter.acquire()
    assert isinstance(raised.value.__cause__, ValueError)


def test_unplanned_client_errors_count_toward_the_breaker_and_are_logged_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = UnplannedFailure()
    limiter = Limiter(client, FixedWindow(10), recovery_time=30.0)
    with caplog.at_level(logging.WARNING, logger="cps_limiter"):
        decisions = [limiter.acquire() for _ in range(50)]
    assert all(d.fail_open for d in decisions)
    assert client.calls == THRESHOLD
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
