"""What every strategy promises, on memory:// and a real Redis, sync and async alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest

from cps_limiter import ConfigurationError, FixedWindow, SlidingWindow, Strategy, TokenBucket
from tests.conftest import LASTING, SyncFacade

MakeLimiter = Callable[..., SyncFacade]

ONE_SECOND: dict[str, Callable[[int], Strategy]] = {
    "fixed": lambda limit: FixedWindow(limit),
    "sliding": lambda limit: SlidingWindow(limit),
    # A permit a second, like the windows: the next one is never more than a second away.
    "token": lambda limit: TokenBucket(rate=limit, period=limit),
}
"""For the tests of waiting and retry times, which need the next permit within a second."""


@pytest.fixture
def limiter(make_limiter: MakeLimiter, strategy_name: str) -> SyncFacade:
    return make_limiter(LASTING[strategy_name](5))


@pytest.fixture
def one_second(make_limiter: MakeLimiter, strategy_name: str) -> SyncFacade:
    """A limiter of 5 permits in 1 s, made when the Redis clock is early in its second, so
    that a fixed window does not roll over between the calls of a test."""
    made = make_limiter(ONE_SECOND[strategy_name](5))
    into_second = made.server_time() % 1.0
    if into_second > 0.5:
        time.sleep(1.0 - into_second)  # aligning to the Redis clock, not waiting for a result
    return made


def test_grants_up_to_the_limit_then_denies(limiter: SyncFacade) -> None:
    decisions = [limiter.acquire() for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]


def test_a_denial_says_when_to_retry(one_second: SyncFacade) -> None:
    one_second.acquire(permits=5)
    denied = one_second.acquire()
    assert (denied.granted, denied.remaining) == (0, 0)
    assert 0 < denied.retry_after <= 1.0
    assert denied.reset_after > 0


def test_an_allowed_decision_has_no_retry_after(limiter: SyncFacade) -> None:
    decision = limiter.acquire()
    assert decision.allowed
    assert (decision.granted, decision.retry_after, decision.waited) == (1, 0.0, 0.0)
    assert decision.limit == 5
    assert not decision.fail_open


def test_many_permits_are_all_or_nothing(limiter: SyncFacade) -> None:
    limiter.acquire(permits=3)
    denied = limiter.acquire(permits=3)
    assert (denied.allowed, denied.granted, denied.remaining) == (False, 0, 2)
    assert limiter.acquire(permits=2).granted == 2


def test_partial_grants_what_is_free(limiter: SyncFacade) -> None:
    limiter.acquire(permits=3)
    decision = limiter.acquire(permits=10, partial=True)
    assert (decision.allowed, decision.granted, decision.remaining) == (True, 2, 0)


def test_partial_with_nothing_free_is_denied(limiter: SyncFacade) -> None:
    limiter.acquire(permits=5)
    decision = limiter.acquire(permits=3, partial=True)
    assert (decision.allowed, decision.granted) == (False, 0)


def test_more_permits_than_the_limit_are_never_granted_at_once(limiter: SyncFacade) -> None:
    decision = limiter.acquire(permits=6)
    assert not decision.allowed
    assert decision.retry_after > 0
    assert limiter.acquire(permits=5).allowed


def test_zero_permits_consume_nothing(limiter: SyncFacade) -> None:
    assert limiter.acquire(permits=0).granted == 0
    assert limiter.acquire(permits=5).allowed


def test_peek_consumes_nothing(limiter: SyncFacade) -> None:
    for _ in range(3):
        peeked = limiter.peek()
        assert (peeked.allowed, peeked.granted, peeked.remaining) == (True, 0, 5)
    assert limiter.acquire(permits=5).allowed


def test_peek_on_an_exhausted_limit_says_when(one_second: SyncFacade) -> None:
    one_second.acquire(permits=5)
    peeked = one_second.peek()
    assert (peeked.allowed, peeked.remaining) == (False, 0)
    assert 0 < peeked.retry_after <= 1.0


def test_reset_forgets_the_grants(limiter: SyncFacade) -> None:
    limiter.acquire(permits=5)
    assert not limiter.acquire().allowed
    limiter.reset()
    assert limiter.acquire(permits=5).allowed


def test_scopes_are_limited_apart(limiter: SyncFacade) -> None:
    assert limiter.acquire("carrier-a", permits=5).allowed
    assert not limiter.acquire("carrier-a").allowed
    assert limiter.acquire("carrier-b", permits=5).allowed
    assert limiter.acquire(permits=5).allowed


def test_max_wait_waits_for_the_next_slot_instead_of_denying(one_second: SyncFacade) -> None:
    one_second.acquire(permits=5)
    decision = one_second.acquire(max_wait=1.5)
    assert (decision.allowed, decision.granted) == (True, 1)
    assert 0 < decision.waited <= 1.0


def test_max_wait_too_short_denies_at_once(limiter: SyncFacade) -> None:
    limiter.acquire(permits=5)
    first = limiter.acquire()
    decision = limiter.acquire(max_wait=first.retry_after / 10)
    assert not decision.allowed
    assert decision.waited == 0.0


def test_partial_with_max_wait_takes_what_the_next_slot_holds(one_second: SyncFacade) -> None:
    one_second.acquire(permits=5)
    decision = one_second.acquire(permits=10, partial=True, max_wait=1.5)
    assert decision.allowed
    assert 1 <= decision.granted <= 5
    assert decision.waited > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"permits": -1}, "permits must be >= 0"),
        ({"permits": 1.5}, "permits must be an int"),
        ({"max_wait": -0.1}, "max_wait must be a finite number >= 0"),
        ({"max_wait": math.inf}, "max_wait must be a finite number >= 0"),
        ({"scope": ""}, "scope must not be empty"),
        ({"scope": "x" * 201}, "at most 200 characters"),
        ({"scope": "has space"}, "whitespace"),
        ({"scope": "line\nbreak"}, "control characters"),
        ({"scope": "{tag}"}, "braces"),
        ({"scope": 7}, "scope must be a str"),
    ],
)
def test_invalid_arguments_raise_configuration_error(
    limiter: SyncFacade, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        limiter.acquire(**kwargs)


def test_configuration_error_is_a_value_error(limiter: SyncFacade) -> None:
    with pytest.raises(ValueError, match="permits"):
        limiter.acquire(permits=-1)
