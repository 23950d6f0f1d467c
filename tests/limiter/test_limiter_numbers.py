"""A decision's numbers mean one thing for every strategy: ``limit`` is the most permits that
could be granted at once, and ``0 <= remaining <= limit``; a scope is counted under the same
keys whichever call takes its permits. On redis and memory://, sync and async."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cps_limiter import (
    Decision,
    FixedWindow,
    Limiter,
    PacedWindow,
    Rule,
    SlidingWindow,
    Strategy,
    TokenBucket,
)
from loadtest.servers import free_port
from tests.conftest import LONG, SyncFacade

MakeLimiter = Callable[..., SyncFacade]
STRATEGIES: dict[str, Strategy] = {
    "fixed": FixedWindow(4, window=LONG),
    "sliding": SlidingWindow(4, window=LONG),
    "paced": PacedWindow(4, window=LONG),
    "token, burst above the rate": TokenBucket(rate=1, burst=5, period=LONG),
    "token, burst below the rate": TokenBucket(rate=8, burst=3, period=LONG),
}


def requests(limiter: SyncFacade) -> list[Decision]:
    """Every kind of request, past the limit: single, several, partial, reserving, peeking."""
    return [
        limiter.peek(),
        limiter.acquire(),
        limiter.acquire(permits=2),
        limiter.acquire(permits=3, partial=True),
        limiter.acquire(permits=9),
        limiter.acquire(max_wait=1.0),
        limiter.acquire(permits=0),
        limiter.peek(),
    ]


@pytest.mark.parametrize("name", STRATEGIES)
def test_remaining_is_never_above_the_limit(make_limiter: MakeLimiter, name: str) -> None:
    limiter = make_limiter(STRATEGIES[name], patient=True)
    for decision in requests(limiter):
        assert 0 <= decision.remaining <= decision.limit, decision


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_limit_is_the_most_granted_at_once(make_limiter: MakeLimiter, name: str) -> None:
    strategy = STRATEGIES[name]
    limiter = make_limiter(strategy, patient=True)
    most = strategy.capacity
    over = limiter.acquire(permits=most + 1)
    at_once = limiter.acquire(permits=most, max_wait=0.0 if name != "paced" else LONG)
    assert (over.allowed, over.limit, over.retry_after) == (False, most, float("inf"))
    assert (at_once.allowed, at_once.granted, at_once.limit) == (True, most, most)


def test_a_token_buckets_limit_is_its_burst(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TokenBucket(rate=1, burst=5), patient=True)
    decision = limiter.acquire()
    assert (decision.limit, decision.remaining) == (5, 4)


def test_a_token_bucket_failing_open_reports_its_burst_and_shares_its_rate() -> None:
    bucket = TokenBucket(rate=2, burst=6)
    with Limiter.from_url(f"redis://127.0.0.1:{free_port()}", bucket, peers=2) as limiter:
        decision = limiter.acquire()
        share = limiter._failure.share
    assert (decision.fail_open, decision.limit) == (True, 6)
    assert share == pytest.approx(1.0)


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_scope_is_counted_on_the_same_keys_by_acquire_and_acquire_all(
    make_limiter: MakeLimiter, name: str
) -> None:
    strategy = STRATEGIES[name]
    limiter = make_limiter(strategy, patient=True)
    limiter.acquire("tenant-7")
    # A paced window's second permit waits for its slot: the shared pacer denies it now.
    second = limiter.acquire_all([Rule(strategy, "tenant-7")])
    taken = 1 + second.granted
    assert second.granted == (0 if name == "paced" else 1)
    assert second.remaining == strategy.capacity - taken
    assert limiter.peek("tenant-7").remaining == strategy.capacity - taken
