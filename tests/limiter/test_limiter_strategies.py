"""Each strategy's own guarantees, on a real Redis."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import redis

from cps_limiter import FixedWindow, Limiter, SlidingWindow, TokenBucket
from tests.conftest import LASTING
from tests.support.commands import script_calls

PERIOD = 3600.0
"""The GCRA figures below are in units of a period this long, so that a slow machine between
two calls of a test changes them by a negligible share."""


def server_second(client: redis.Redis) -> int:
    seconds, _ = client.time()
    return int(seconds)


def early_in_a_second(client: redis.Redis) -> None:
    """Return when the Redis clock is in the first half of a second: a test that needs two
    calls in one 1-s window then has half a second for them."""
    _, micros = client.time()
    if micros > 500_000:
        time.sleep((1_000_000 - micros) / 1e6)  # aligning to the clock, not awaiting a result


@pytest.mark.parametrize("name", sorted(LASTING))
def test_decisions_follow_the_redis_clock_not_the_callers(
    redis_url: str, prefix: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = Limiter.from_url(redis_url, LASTING[name](3), prefix=prefix, deny_cache=False)
    assert limiter.acquire(permits=3).allowed
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # the caller's clock leaps on
    assert not limiter.acquire().allowed


# --- FixedWindow: the seed's algorithm, done in one script -------------------------------------


def test_seed_example_95_granted_becomes_96(raw_redis: redis.Redis, redis_url: str) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(100))
    limiter.reset()
    # The window may turn over between reading the clock and deciding: prime this second and
    # the next, then look at the one the script used.
    now = server_second(raw_redis)
    for second in (now, now + 1):
        raw_redis.set(f"cps:{second}", 95, px=5000)
    decision = limiter.acquire()
    counts = [int(raw_redis.get(f"cps:{second}") or 0) for second in (now, now + 1)]
    assert decision.allowed
    assert decision.remaining == 4
    assert sorted(counts) == [95, 96]
    limiter.reset()


def test_seed_example_at_100_denies_and_stays_100(raw_redis: redis.Redis, redis_url: str) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(100), deny_cache=False)
    limiter.reset()
    now = server_second(raw_redis)
    for second in (now, now + 1):
        raw_redis.set(f"cps:{second}", 100, px=5000)
    decision = limiter.acquire()
    counts = [int(raw_redis.get(f"cps:{second}") or 0) for second in (now, now + 1)]
    assert not decision.allowed
    assert counts == [100, 100]
    limiter.reset()


def test_fixed_window_key_is_prefix_and_window_start(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(10, window=60), prefix=prefix)
    before = server_second(raw_redis)
    limiter.acquire("trunk-1", permits=3)
    after = server_second(raw_redis)
    keys = raw_redis.keys(f"{prefix}:*")
    starts = {before - before % 60, after - after % 60}
    assert len(keys) == 1
    assert keys[0] in {f"{prefix}:trunk-1:{start}" for start in starts}
    assert raw_redis.get(keys[0]) == "3"


def test_fixed_window_counter_expires_within_two_windows(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    Limiter.from_url(redis_url, FixedWindow(10, window=5), prefix=prefix).acquire()
    (key,) = raw_redis.keys(f"{prefix}:*")
    assert 0 < raw_redis.pttl(key) <= 10_000


def test_fixed_window_count_never_passes_the_limit(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(5, window=3600), prefix=prefix)
    for _ in range(20):
        limiter.acquire(permits=2)
    (key,) = raw_redis.keys(f"{prefix}:*")
    assert raw_redis.get(key) == "4"


# --- SlidingWindow against FixedWindow at a window boundary ------------------------------------


def most_in_any_interval(times: list[float], length: float) -> int:
    """The most grants inside any half-open interval [t, t + length)."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= length:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_sliding_window_never_holds_more_than_the_limit(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, SlidingWindow(10, window=0.5), prefix=prefix)
    granted = 0
    for permits in itertools.islice(itertools.cycle([1, 3, 2, 4]), 40):
        granted += limiter.acquire(permits=permits, max_wait=0.6).granted
    scores = [score / 1e6 for _, score in raw_redis.zrange(f"{prefix}:log", 0, -1, withscores=True)]
    assert granted > 20
    assert most_in_any_interval(scores, 0.5) <= 10


def test_fixed_window_lets_a_second_burst_through_when_the_window_turns(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    """Twice the limit inside less than one window: the boundary burst."""
    limiter = Limiter.from_url(redis_url, FixedWindow(10), prefix=prefix)
    early_in_a_second(raw_redis)
    assert limiter.acquire(permits=10).allowed
    second = limiter.acquire(permits=10, max_wait=1.5)
    assert second.allowed
    assert 0 < second.waited < 1.0
    counters = sorted(raw_redis.keys(f"{prefix}:*"))
    assert len(counters) == 2
    assert int(counters[1].rsplit(":", 1)[1]) - int(counters[0].rsplit(":", 1)[1]) == 1
    assert [raw_redis.get(key) for key in counters] == ["10", "10"]


def test_sliding_window_holds_a_second_burst_for_a_whole_window(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, SlidingWindow(10), prefix=prefix)
    assert limiter.acquire(permits=10).allowed
    second = limiter.acquire(permits=10, max_wait=1.5)
    assert second.allowed
    scores = sorted(s for _, s in raw_redis.zrange(f"{prefix}:log", 0, -1, withscores=True))
    assert scores[10] - scores[0] == 1_000_000  # microseconds: exactly one window apart
    assert most_in_any_interval([s / 1e6 for s in scores], 1.0) == 10


def test_token_bucket_holds_a_second_burst_until_the_bucket_is_full(
    redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, TokenBucket(rate=10), prefix=prefix)
    started = time.monotonic()
    assert limiter.acquire(permits=10).allowed
    second = limiter.acquire(permits=10, max_wait=1.5)
    assert second.allowed
    assert 0 < second.waited <= 1.0
    assert time.monotonic() - started >= 1.0 - 0.01  # a whole second after the first burst


# --- TokenBucket: GCRA as go-redis/redis_rate defines it ---------------------------------------


def test_contract_example_first_acquire(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(redis_url, TokenBucket(rate=10, period=PERIOD), prefix=prefix)
    first = limiter.acquire()
    assert (first.granted, first.remaining) == (1, 9)
    assert first.reset_after == pytest.approx(0.1 * PERIOD, abs=1)
    second = limiter.acquire(permits=2)
    assert second.remaining == 7
    assert second.reset_after == pytest.approx(0.3 * PERIOD, abs=1)


def test_redis_rate_figures(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(
        redis_url, TokenBucket(rate=10, burst=10, period=PERIOD), prefix=prefix, deny_cache=False
    )
    first = limiter.acquire()
    assert (first.allowed, first.remaining, first.retry_after) == (True, 9, 0.0)
    assert first.reset_after == pytest.approx(0.1 * PERIOD, abs=1)
    two = limiter.acquire(permits=2)
    assert two.remaining == 7
    assert two.reset_after == pytest.approx(0.3 * PERIOD, abs=1)
    seven = limiter.acquire(permits=7)
    assert seven.remaining == 0
    assert seven.reset_after == pytest.approx(1.0 * PERIOD, abs=1)
    thousand = limiter.acquire(permits=1000)
    assert (thousand.allowed, thousand.remaining) == (False, 0)
    # The request can never fit in the burst: the contract says inf, as for the other
    # strategies (redis_rate answers when a bucket that size would take it, 99 s).
    assert thousand.retry_after == math.inf
    assert thousand.reset_after == pytest.approx(1.0 * PERIOD, abs=1)


def test_allow_at_most_grants_what_is_left(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(
        redis_url, TokenBucket(rate=10, burst=10, period=PERIOD), prefix=prefix
    )
    limiter.acquire(permits=3)
    decision = limiter.acquire(permits=10, partial=True)
    assert (decision.allowed, decision.granted, decision.remaining) == (True, 7, 0)
    assert decision.reset_after == pytest.approx(1.0 * PERIOD, abs=1)


def test_token_bucket_peek_is_a_zero_permit_check(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(redis_url, TokenBucket(rate=10, period=PERIOD), prefix=prefix)
    limiter.acquire(permits=4)
    peeked = limiter.peek()
    assert (peeked.allowed, peeked.granted, peeked.remaining) == (True, 0, 6)
    assert peeked.reset_after == pytest.approx(0.4 * PERIOD, abs=1)
    assert limiter.acquire(permits=6).allowed


def test_token_bucket_stores_one_key_that_expires_when_full(
    raw_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    Limiter.from_url(redis_url, TokenBucket(rate=10), prefix=prefix).acquire(permits=5)
    assert raw_redis.keys(f"{prefix}*") == [f"{prefix}:tat"]
    assert 0 < raw_redis.pttl(f"{prefix}:tat") <= 500


# --- One round trip, and scripts that survive SCRIPT FLUSH -------------------------------------


@pytest.mark.parametrize("strategy", [FixedWindow(100), SlidingWindow(100), TokenBucket(100)])
def test_many_permits_take_one_round_trip(
    raw_redis: redis.Redis, redis_url: str, prefix: str, strategy: FixedWindow
) -> None:
    limiter = Limiter.from_url(redis_url, strategy, prefix=prefix)
    limiter.acquire()  # loads the script
    # The decision is a single EVALSHA.
    calls = script_calls(raw_redis, lambda: limiter.acquire(permits=10))
    assert calls == {"cmdstat_evalsha": 1}


@pytest.mark.parametrize("name", sorted(LASTING))
def test_scripts_survive_script_flush(
    raw_redis: redis.Redis, redis_url: str, prefix: str, name: str
) -> None:
    limiter = Limiter.from_url(redis_url, LASTING[name](3), prefix=prefix)
    assert limiter.acquire().allowed
    raw_redis.script_flush()
    decision = limiter.acquire(permits=2)
    assert (decision.allowed, decision.fail_open, decision.remaining) == (True, False, 0)
