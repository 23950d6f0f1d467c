"""Adaptive CPS: health tiers, the answer-rate floor, stale reports and the operator's cap."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from cps_limiter import (
    AdaptivePolicy,
    AsyncLimiter,
    BackendUnavailable,
    ConfigurationError,
    FixedWindow,
    Limiter,
    TokenBucket,
)
from loadtest.servers import free_port
from tests.conftest import STRATEGIES


@pytest.fixture
def limiter(backend_url: str, prefix: str, strategy_name: str) -> Limiter:
    return Limiter.from_url(
        backend_url, STRATEGIES[strategy_name](100), prefix=prefix, adaptive=AdaptivePolicy()
    )


@pytest.mark.parametrize(
    ("cpu", "answer_rate", "in_force"),
    [
        (50.0, None, 100),  # normal
        (80.0, None, 100),  # the tiers start above their threshold
        (85.0, None, 50),  # over 80%: half
        (95.0, None, 25),  # over 90%: a quarter
        (50.0, 0.5, 100),  # answer rate above the floor
        (50.0, 0.1, 50),  # below the floor: cut
        (95.0, 0.1, 12),  # both
    ],
)
def test_health_sets_the_limit_in_force(
    limiter: Limiter, cpu: float, answer_rate: float | None, in_force: int
) -> None:
    limiter.report_health(cpu=cpu, answer_rate=answer_rate)
    assert limiter.peek().limit == in_force
    granted = limiter.acquire(permits=1000, partial=True).granted
    assert granted == in_force


def test_without_a_report_the_base_limit_holds(limiter: Limiter) -> None:
    assert limiter.peek().limit == 100


def test_a_stale_report_is_ignored(limiter: Limiter) -> None:
    limiter.report_health(cpu=95.0, answer_rate=0.05)
    key = f"{limiter.key_base()}:adaptive"
    seconds, _ = limiter.client.time()
    limiter.client.hset(key, "at", str(float(seconds) - 31))  # older than max_age (30 s)
    assert limiter.peek().limit == 100


def test_a_report_just_inside_max_age_still_counts(limiter: Limiter) -> None:
    limiter.report_health(cpu=95.0)
    seconds, _ = limiter.client.time()
    limiter.client.hset(f"{limiter.key_base()}:adaptive", "at", str(float(seconds) - 25))
    assert limiter.peek().limit == 25


def test_the_cap_overrides_the_base_limit(limiter: Limiter) -> None:
    limiter.set_cap(40, ttl=600)
    assert limiter.peek().limit == 40
    assert limiter.cap()[0] == 40
    limiter.report_health(cpu=85.0)
    assert limiter.peek().limit == 20


def test_the_cap_may_raise_the_limit_too(limiter: Limiter) -> None:
    limiter.set_cap(150, ttl=600)
    assert limiter.acquire(permits=150).allowed


def test_clearing_the_cap_restores_the_base(limiter: Limiter) -> None:
    limiter.set_cap(40, ttl=600)
    limiter.clear_cap()
    assert limiter.peek().limit == 100
    assert limiter.cap() == (None, None)


def test_the_cap_expires_by_itself(limiter: Limiter) -> None:
    limiter.set_cap(40, ttl=0.2)
    set_at = time.monotonic()
    assert limiter.peek().limit == 40
    deadline = set_at + 2.0
    while limiter.peek().limit == 40 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for Redis's expiry, bounded by the deadline
    assert limiter.peek().limit == 100
    assert time.monotonic() - set_at >= 0.2


def test_health_is_ignored_without_a_policy(backend_url: str, prefix: str) -> None:
    plain = Limiter.from_url(backend_url, FixedWindow(100), prefix=prefix)
    plain.report_health(cpu=99.0, answer_rate=0.0)
    plain.set_cap(10, ttl=600)
    assert plain.peek().limit == 100


def test_the_token_bucket_scales_rate_and_burst(backend_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(
        backend_url, TokenBucket(rate=100), prefix=prefix, adaptive=AdaptivePolicy()
    )
    limiter.report_health(cpu=85.0)
    first = limiter.acquire()
    assert first.limit == 50
    assert first.reset_after == pytest.approx(0.02, abs=0.005)  # 1 / 50 per second


def test_the_health_report_is_stamped_with_the_redis_clock(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(10), prefix=prefix)
    limiter.report_health(cpu=42.0, answer_rate=0.75)
    stored = raw_redis.hgetall(f"{prefix}:adaptive")
    seconds, _ = raw_redis.time()
    assert float(stored["cpu"]) == 42.0
    assert float(stored["answer_rate"]) == 0.75
    assert abs(float(stored["at"]) - seconds) < 2
    assert limiter.health().age is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high_cpu": 120.0}, "high_cpu must be a percentage"),
        ({"high_cpu": 95.0, "critical_cpu": 90.0}, "critical_cpu"),
        ({"high_cpu_factor": 1.5}, "high_cpu_factor must be between 0 and 1"),
        ({"answer_rate_floor": -0.1}, "answer_rate_floor"),
        ({"max_age": 0}, "max_age must be a finite number > 0"),
    ],
)
def test_an_invalid_policy_names_what_is_wrong(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AdaptivePolicy(**kwargs)


@pytest.mark.parametrize(
    ("cpu", "answer_rate", "message"),
    [(101.0, None, "cpu must be a percentage"), (50.0, 1.5, "answer_rate must be between")],
)
def test_an_invalid_report_is_refused(
    limiter: Limiter, cpu: float, answer_rate: float | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        limiter.report_health(cpu=cpu, answer_rate=answer_rate)


def test_an_invalid_report_is_refused_before_anything_is_sent() -> None:
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", FixedWindow(10))
    with pytest.raises(ConfigurationError, match="cpu must be a percentage"):
        limiter.report_health(cpu=101.0)


def test_an_operators_call_to_a_redis_that_is_down_raises_backend_unavailable() -> None:
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", FixedWindow(10))
    with pytest.raises(BackendUnavailable):
        limiter.set_cap(10, ttl=60)


@pytest.fixture
async def async_limiter(backend_url: str, prefix: str) -> AsyncIterator[AsyncLimiter]:
    limiter = AsyncLimiter.from_url(
        backend_url, FixedWindow(100), prefix=prefix, adaptive=AdaptivePolicy()
    )
    yield limiter
    await limiter.aclose()


async def test_the_async_limiter_reports_and_reads_health(async_limiter: AsyncLimiter) -> None:
    await async_limiter.report_health(cpu=85.0, answer_rate=0.9)
    health = await async_limiter.health()
    assert (health.cpu, health.answer_rate) == (85.0, 0.9)
    assert health.age is not None
    assert (await async_limiter.peek()).limit == 50


async def test_the_async_limiter_sets_reads_and_clears_the_cap(
    async_limiter: AsyncLimiter,
) -> None:
    await async_limiter.set_cap(40, ttl=600)
    cap, left = await async_limiter.cap()
    assert cap == 40
    assert left is not None
    assert 590 < left <= 600
    assert (await async_limiter.peek()).limit == 40
    await async_limiter.clear_cap()
    assert await async_limiter.cap() == (None, None)


def test_a_health_report_leaves_the_cap_and_its_life_alone(limiter: Limiter) -> None:
    limiter.set_cap(40, ttl=3 * 86400)
    limiter.report_health(cpu=85.0)
    cap, left = limiter.cap()
    assert cap == 40
    assert left is not None
    assert left > 2 * 86400
    assert limiter.peek().limit == 20


def test_a_short_cap_leaves_the_health_report_alone(limiter: Limiter) -> None:
    limiter.report_health(cpu=85.0)
    limiter.set_cap(40, ttl=0.05)
    set_at = time.monotonic()
    while limiter.cap()[0] is not None and time.monotonic() < set_at + 2.0:
        time.sleep(0.01)  # polling for the cap's end on the Redis clock, bounded
    assert limiter.cap() == (None, None)
    assert limiter.health().cpu == 85.0
    assert limiter.peek().limit == 50


def test_a_report_without_an_answer_rate_drops_the_previous_one(limiter: Limiter) -> None:
    limiter.report_health(cpu=50.0, answer_rate=0.1)
    limiter.report_health(cpu=50.0)
    assert limiter.health().answer_rate is None
    assert limiter.peek().limit == 100
