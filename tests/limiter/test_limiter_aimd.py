"""AIMD: the carrier's refusals lower the limit in force at most once a hold (2.5 s), and from
the hold's end it climbs back by a step a second to the base limit, never below the floor. Time
passes on the Redis clock: a test moves the last decrease back instead of sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cps_limiter import AdaptivePolicy, AsyncLimiter, ConfigurationError, FixedWindow, Limiter
from tests.conftest import STRATEGIES

BASE = 100


@pytest.fixture
def limiter(backend_url: str, prefix: str, strategy_name: str) -> Limiter:
    return Limiter.from_url(
        backend_url, STRATEGIES[strategy_name](BASE), prefix=prefix, adaptive=AdaptivePolicy()
    )


def _decreased_ago(limiter: Limiter, seconds: float) -> None:
    """Move the last decrease ``seconds`` into the past of the Redis clock."""
    key = f"{limiter.key_base()}:adaptive"
    at = float(limiter.client.hget(key, "aimd_at"))
    limiter.client.hset(key, "aimd_at", f"{at - seconds * 1000:.0f}")


def _decrease(limiter: Limiter) -> int:
    limiter.report_refused(1)
    return limiter.peek().limit


def test_a_refusal_lowers_the_limit_by_the_refusal_factor(limiter: Limiter) -> None:
    assert _decrease(limiter) == 85


def test_a_decrease_consumes_the_pending_refusals(limiter: Limiter) -> None:
    limiter.report_refused(7)
    limiter.peek()
    assert limiter.aimd().refused == 0


def test_refusals_within_the_hold_after_a_decrease_are_forgiven(limiter: Limiter) -> None:
    _decrease(limiter)
    _decreased_ago(limiter, 2.49)
    assert _decrease(limiter) == 85  # no cut, and no rise before the hold ends
    assert limiter.aimd().refused == 0


def test_refusals_after_the_hold_decrease_again(limiter: Limiter) -> None:
    _decrease(limiter)
    _decreased_ago(limiter, 2.5)
    assert _decrease(limiter) == 73  # (85 + the hold's end's step of 2) x 0.85


@pytest.mark.parametrize(("seconds", "in_force"), [(2.49, 85), (2.5, 87), (4.5, 91)])
def test_from_the_holds_end_the_limit_rises_a_step_each_second(
    limiter: Limiter, seconds: float, in_force: int
) -> None:
    _decrease(limiter)
    _decreased_ago(limiter, seconds)
    assert limiter.peek().limit == in_force


def test_the_rise_stops_at_the_base_limit_and_the_state_goes(limiter: Limiter) -> None:
    _decrease(limiter)
    _decreased_ago(limiter, 60.0)
    assert limiter.peek().limit == BASE
    assert limiter.aimd().limit is None


def test_refusals_never_take_the_limit_below_the_floor(
    backend_url: str, prefix: str, strategy_name: str
) -> None:
    policy = AdaptivePolicy(aimd_floor=0.5)
    limiter = Limiter.from_url(
        backend_url, STRATEGIES[strategy_name](BASE), prefix=prefix, adaptive=policy
    )
    for _ in range(10):
        _decrease(limiter)
        _decreased_ago(limiter, 2.5)
    assert _decrease(limiter) == 50


def test_refusals_lower_the_operators_cap(limiter: Limiter) -> None:
    limiter.set_cap(50, ttl=600)
    assert _decrease(limiter) == 42


def test_a_rise_writes_nothing(limiter: Limiter) -> None:
    _decrease(limiter)
    _decreased_ago(limiter, 2.0)
    key = f"{limiter.key_base()}:adaptive"
    before = limiter.client.hgetall(key)
    limiter.acquire()
    assert limiter.client.hgetall(key) == before


def test_no_refusal_ever_reported_leaves_no_state(limiter: Limiter) -> None:
    limiter.acquire()
    assert limiter.client.exists(f"{limiter.key_base()}:adaptive") == 0


def test_refusals_are_ignored_without_a_policy(backend_url: str, prefix: str) -> None:
    plain = Limiter.from_url(backend_url, FixedWindow(BASE), prefix=prefix)
    plain.report_refused(50)
    assert plain.peek().limit == BASE


@pytest.mark.parametrize("name", ["refusal_factor", "aimd_step", "aimd_floor"])
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_an_invalid_aimd_setting_is_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=name):
        AdaptivePolicy(**{name: value})


def test_a_hold_under_a_second_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="refusal_hold must be at least 1"):
        AdaptivePolicy(refusal_hold=0.5)


def test_a_refusal_count_below_one_is_refused(limiter: Limiter) -> None:
    with pytest.raises(ConfigurationError, match="refused"):
        limiter.report_refused(0)


@pytest.fixture
async def async_limiter(backend_url: str, prefix: str) -> AsyncIterator[AsyncLimiter]:
    limiter = AsyncLimiter.from_url(
        backend_url, FixedWindow(BASE), prefix=prefix, adaptive=AdaptivePolicy()
    )
    yield limiter
    await limiter.aclose()


async def test_the_async_limiter_reports_refusals_and_reads_the_aimd_state(
    async_limiter: AsyncLimiter,
) -> None:
    await async_limiter.report_refused(3)
    assert (await async_limiter.aimd()).refused == 3
    assert (await async_limiter.peek()).limit == 85
    state = await async_limiter.aimd()
    assert (state.refused, state.limit) == (0, 85.0)
    assert state.since_decrease is not None
