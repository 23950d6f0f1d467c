"""fail_mode="bounded": while Redis gives no answer, this process grants its share of the limit,
spaced by a local pacer, instead of everything ("open") or nothing ("closed")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from cps_limiter import AdaptivePolicy, BackendUnavailable, ConfigurationError, FixedWindow, Limiter
from loadtest.servers import RedisServer, free_port, stalled_listener
from tests.conftest import SyncFacade
from tests.support.faults import DECISION_BOUND

LIMIT = 20
PEERS = 4
INTERVAL = PEERS / LIMIT
"""Seconds between two permits of this process while Redis is down: one over its share."""

MakeLimiterOn = Callable[..., SyncFacade]


@pytest.fixture
def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def stalled_url() -> Iterator[str]:
    with stalled_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def bounded(make_limiter_on: MakeLimiterOn, dead_url: str) -> SyncFacade:
    """A bounded limiter at LIMIT shared by PEERS processes, on a port nothing listens on."""
    return make_limiter_on(dead_url, FixedWindow(LIMIT), fail_mode="bounded", peers=PEERS)


def test_the_first_permit_is_granted_at_once_and_says_it_failed_open(bounded: SyncFacade) -> None:
    decision = bounded.acquire()
    assert (decision.allowed, decision.granted, decision.fail_open) == (True, 1, True)
    assert decision.waited == 0.0


@pytest.mark.parametrize(("limit", "peers"), [(20, 4), (100, 10), (10, 1)])
def test_the_permits_of_a_grant_are_one_share_interval_apart(
    make_limiter_on: MakeLimiterOn, dead_url: str, limit: int, peers: int
) -> None:
    limiter = make_limiter_on(dead_url, FixedWindow(limit), fail_mode="bounded", peers=peers)
    decision = limiter.acquire(permits=3, max_wait=1.0)
    assert (decision.granted, decision.fail_open) == (3, True)
    assert decision.schedule == pytest.approx((0.0, peers / limit, 2 * peers / limit), abs=1e-9)


def test_a_permit_before_the_share_interval_has_passed_is_denied_until_it_has(
    bounded: SyncFacade,
) -> None:
    started = time.monotonic()
    assert bounded.acquire().allowed
    decision = bounded.acquire()
    elapsed = time.monotonic() - started
    assert (decision.allowed, decision.granted, decision.fail_open) == (False, 0, True)
    assert INTERVAL - elapsed <= decision.retry_after <= INTERVAL


def test_with_max_wait_acquire_sleeps_to_the_next_local_slot(bounded: SyncFacade) -> None:
    started = time.monotonic()
    assert bounded.acquire().allowed
    decision = bounded.acquire(max_wait=1.0)
    returned = time.monotonic()
    assert (decision.allowed, decision.fail_open) == (True, True)
    assert 0.0 < decision.waited <= INTERVAL
    assert returned - started >= INTERVAL


def test_partial_grants_only_the_local_slots_within_max_wait(bounded: SyncFacade) -> None:
    decision = bounded.acquire(permits=5, partial=True, max_wait=2.5 * INTERVAL)
    assert (decision.granted, decision.fail_open) == (3, True)


def test_a_denied_request_takes_no_slot(bounded: SyncFacade) -> None:
    denied = bounded.acquire(permits=5, max_wait=2.5 * INTERVAL)
    after = bounded.acquire()
    assert (denied.allowed, denied.granted, denied.fail_open) == (False, 0, True)
    assert (after.allowed, after.waited) == (True, 0.0)


def test_all_or_nothing_spanning_more_than_max_wait_is_denied_for_ever(
    bounded: SyncFacade,
) -> None:
    decision = bounded.acquire(permits=4, max_wait=2.5 * INTERVAL)
    assert (decision.allowed, decision.fail_open) == (False, True)
    assert decision.retry_after == float("inf")


def test_all_or_nothing_that_fits_max_wait_but_not_yet_says_when_its_first_slot_is_free(
    bounded: SyncFacade,
) -> None:
    started = time.monotonic()
    assert bounded.acquire().allowed
    decision = bounded.acquire(permits=3, max_wait=2.5 * INTERVAL)
    elapsed = time.monotonic() - started
    assert (decision.allowed, decision.fail_open) == (False, True)
    assert INTERVAL - elapsed <= decision.retry_after <= INTERVAL


def test_a_request_for_no_permits_is_allowed(bounded: SyncFacade) -> None:
    assert bounded.acquire().allowed
    decision = bounded.acquire(permits=0)
    assert (decision.allowed, decision.granted, decision.fail_open) == (True, 0, True)


def test_peek_takes_no_local_slot(bounded: SyncFacade) -> None:
    peeked = bounded.peek()
    decision = bounded.acquire()
    assert (peeked.allowed, peeked.granted, peeked.fail_open) == (True, 0, True)
    assert (decision.allowed, decision.waited) == (True, 0.0)


def test_set_peers_changes_the_share(bounded: SyncFacade) -> None:
    bounded.limiter.set_peers(1)
    decision = bounded.acquire(permits=3, max_wait=1.0)
    assert decision.schedule == pytest.approx((0.0, 1 / LIMIT, 2 / LIMIT), abs=1e-9)


def test_after_redis_reported_a_lower_limit_in_force_the_share_follows_it(
    make_limiter_on: MakeLimiterOn, own_redis: RedisServer
) -> None:
    limiter = make_limiter_on(
        own_redis.url, FixedWindow(100), fail_mode="bounded", peers=1, adaptive=AdaptivePolicy()
    )
    limiter.set_cap(10, ttl=60)
    answered = limiter.acquire()
    own_redis.kill()
    decision = limiter.acquire(permits=3, max_wait=1.0)
    assert (answered.limit, answered.fail_open) == (10, False)
    assert (decision.granted, decision.fail_open) == (3, True)
    assert decision.schedule == pytest.approx((0.0, 0.1, 0.2), abs=1e-9)


@pytest.mark.parametrize("peers", [0, -1, 1.5, "2"])
def test_peers_must_be_a_positive_integer(dead_url: str, peers: object) -> None:
    with pytest.raises(ConfigurationError, match="peers"):
        Limiter.from_url(dead_url, FixedWindow(LIMIT), fail_mode="bounded", peers=peers)
    limiter = Limiter.from_url(dead_url, FixedWindow(LIMIT), fail_mode="bounded")
    with pytest.raises(ConfigurationError, match="peers"):
        limiter.set_peers(peers)  # type: ignore[arg-type]
    limiter.close()


# --- The other modes are as they were ------------------------------------------------------------


def test_open_still_grants_everything_at_once(
    make_limiter_on: MakeLimiterOn, dead_url: str
) -> None:
    limiter = make_limiter_on(dead_url, FixedWindow(LIMIT), fail_mode="open", peers=PEERS)
    decisions = [limiter.acquire(permits=LIMIT) for _ in range(3)]
    assert all(d.allowed and d.fail_open and d.granted == LIMIT for d in decisions)
    assert all((d.waited, d.schedule) == (0.0, ()) for d in decisions)


def test_closed_still_raises_backend_unavailable(
    make_limiter_on: MakeLimiterOn, dead_url: str
) -> None:
    limiter = make_limiter_on(dead_url, FixedWindow(LIMIT), fail_mode="closed", peers=PEERS)
    with pytest.raises(BackendUnavailable, match="Redis unavailable"):
        limiter.acquire()


def test_an_unknown_fail_mode_names_the_choices(dead_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"'open', 'closed', 'bounded'.*'sideways'"):
        Limiter.from_url(dead_url, FixedWindow(LIMIT), fail_mode="sideways")


# --- The bound on a decision ---------------------------------------------------------------------


def test_a_bounded_decision_against_a_stalled_redis_takes_at_most_250_ms(
    make_limiter_on: MakeLimiterOn, stalled_url: str
) -> None:
    limiter = make_limiter_on(stalled_url, FixedWindow(LIMIT), fail_mode="bounded", peers=PEERS)
    timed = []
    for _ in range(6):  # the first three each meet the stall; the breaker answers the rest
        started = time.perf_counter()
        decision = limiter.acquire()
        timed.append((time.perf_counter() - started, decision))
    assert all(decision.fail_open for _, decision in timed)
    assert timed[0][1].allowed
    assert max(seconds for seconds, _ in timed) <= DECISION_BOUND


def test_the_share_counts_the_limit_over_its_window_not_per_second(
    make_limiter_on: MakeLimiterOn, dead_url: str
) -> None:
    # 120 a minute shared by 4: this process may grant one every 2 s, not 30 a second.
    limiter = make_limiter_on(
        dead_url, FixedWindow(120, window=60), fail_mode="bounded", peers=PEERS
    )
    limiter.acquire()

    denied = limiter.acquire()

    assert (denied.allowed, denied.fail_open) == (False, True)
    assert denied.retry_after == pytest.approx(2.0, abs=0.05)
