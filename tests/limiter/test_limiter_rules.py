"""Several rules in one decision, and concurrency leases: all or nothing, on redis and memory://,
sync and async."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from cps_limiter import (
    AdaptivePolicy,
    AsyncLimiter,
    BackendUnavailable,
    Concurrency,
    ConfigurationError,
    FixedWindow,
    Limiter,
    PacedWindow,
    Rule,
    SlidingWindow,
    TokenBucket,
)
from loadtest.servers import free_port
from tests.conftest import LONG, SyncFacade

TRUNK = FixedWindow(10, window=LONG)
CAMPAIGN = "campaign:7"

MakeLimiter = Callable[..., SyncFacade]


def ids(count: int, start: int = 0) -> list[str]:
    return [f"call-{n}" for n in range(start, start + count)]


def wait_past(limiter: SyncFacade, seconds: float) -> None:
    """Return once the Redis clock is ``seconds`` past its reading now: the leases' own clock."""
    until = limiter.server_time() + seconds
    while limiter.server_time() <= until:
        pass


def test_a_rule_that_denies_leaves_nothing_taken_from_the_others(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(FixedWindow(2, window=LONG), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 3)
    assert (decision.allowed, decision.granted, decision.limited_by) == (False, 0, 1)
    assert decision.retry_after == float("inf")
    assert limiter.peek().remaining == TRUNK.limit


def test_partial_grants_the_longest_run_every_rule_allows(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(FixedWindow(2, window=LONG), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 3, partial=True)
    assert (decision.allowed, decision.granted, decision.limited_by) == (True, 2, 1)
    assert limiter.peek().remaining == TRUNK.limit - 2


def test_a_grant_every_rule_allows_names_no_rule(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(FixedWindow(5, window=LONG), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 3)
    assert (decision.granted, decision.limited_by, decision.remaining) == (3, None, 2)


def test_a_full_concurrency_rule_denies_until_a_lease_is_released(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(Concurrency(2, ttl=60), CAMPAIGN)]
    held = limiter.acquire_all(rules, 2, leases=ids(2))
    assert held.leases == ("call-0", "call-1")
    denied = limiter.acquire_all(rules, 1, leases=ids(1, 2))
    assert (denied.allowed, denied.limited_by) == (False, 1)
    assert 59 < denied.retry_after <= 60
    assert limiter.release(CAMPAIGN, "call-0") == 1
    assert limiter.acquire_all(rules, 1, leases=ids(1, 2)).granted == 1
    assert limiter.peek().remaining == TRUNK.limit - 3


def test_a_rules_call_sent_again_finds_its_own_lease_held_by_it(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(Concurrency(2, ttl=60), CAMPAIGN)]
    limiter.acquire_all(rules, 1, leases=["other"])
    limiter.acquire_all(rules, 1, leases=["mine"])  # its reply came late: the call is resent

    again = limiter.acquire_all(rules, 1, leases=["mine"])

    assert again.leases == ("mine",)
    assert limiter.leases_held(CAMPAIGN)[0] == 2
    assert not limiter.acquire_all(rules, 1, leases=["third"]).allowed


def test_a_lease_expires_by_itself_on_the_redis_clock(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(TRUNK), Rule(Concurrency(1, ttl=0.2), CAMPAIGN)]
    assert limiter.acquire_all(rules, 1, leases=["crashed"]).granted == 1
    denied = limiter.acquire_all(rules, 1, leases=["next"])
    assert not denied.allowed
    wait_past(limiter, denied.retry_after)
    assert limiter.acquire_all(rules, 1, leases=["next"]).leases == ("next",)


def test_leases_held_counts_the_live_leases(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(Concurrency(5, ttl=30), CAMPAIGN)]
    limiter.acquire_all(rules, 3, leases=ids(3))
    live, expires_in = limiter.leases_held(CAMPAIGN)
    assert live == 3
    assert 29 < expires_in <= 30
    assert limiter.leases_held("campaign:none") == (0, 0.0)


def test_one_zrem_on_the_lease_key_releases_a_lease(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    rules = [Rule(Concurrency(1, ttl=30), CAMPAIGN)]
    limiter.acquire_all(rules, 1, leases=["call-a"])
    key = limiter.limiter.lease_key(CAMPAIGN)
    assert key == f"{limiter.limiter.prefix}:{CAMPAIGN}:leases"
    assert limiter.command("ZREM", key, "call-a") == 1
    assert limiter.acquire_all(rules, 1, leases=["call-b"]).allowed


def test_releasing_an_unknown_lease_releases_nothing(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    assert limiter.release(CAMPAIGN, "never-granted") == 0
    assert limiter.release(CAMPAIGN) == 0


def test_a_paced_rule_keeps_its_schedule_under_a_concurrency_rule(
    make_limiter: MakeLimiter,
) -> None:
    paced = PacedWindow(10)
    limiter = make_limiter(paced, patient=True)
    rules = [Rule(paced), Rule(Concurrency(5, ttl=60), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 8, partial=True, max_wait=2.0, leases=ids(8))
    assert (decision.granted, decision.limited_by) == (5, 1)
    assert decision.schedule == pytest.approx((0.0, 0.1, 0.2, 0.3, 0.4))
    # The paced window's own acquire sees the reserved slots: its next one comes after them.
    assert limiter.acquire(max_wait=2.0).waited >= 0.4 - decision.waited


def test_a_campaign_cps_rule_counts_each_paced_permit_in_the_window_of_its_moment(
    make_limiter: MakeLimiter,
) -> None:
    paced = PacedWindow(20)
    limiter = make_limiter(paced, patient=True)
    rules = [Rule(paced), Rule(FixedWindow(3), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 30, partial=True, max_wait=3.0)
    # The run stops at the first slot whose window the campaign has no room in: the slots are
    # 50 ms apart, so that is within the first two windows.
    assert decision.limited_by == 1
    assert 3 <= decision.granted <= 6
    counters = limiter.command("KEYS", f"{limiter.limiter.prefix}:{CAMPAIGN}:*")
    counts = [int(limiter.command("GET", key)) for key in counters]
    assert sum(counts) == decision.granted
    assert max(counts) == 3


def test_a_rule_on_another_scope_does_not_teach_the_fail_mode_its_limit(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(TRUNK, patient=True)
    decision = limiter.acquire_all([Rule(FixedWindow(3, window=LONG), CAMPAIGN)], 1)
    assert decision.limit == 3
    assert limiter.limiter._failure._limit == TRUNK.limit


@pytest.mark.parametrize("trunk", [FixedWindow(10, window=LONG), TokenBucket(rate=10)])
def test_an_operators_cap_applies_to_the_first_rule(
    make_limiter: MakeLimiter, trunk: FixedWindow | TokenBucket
) -> None:
    limiter = make_limiter(trunk, patient=True, adaptive=AdaptivePolicy())
    limiter.set_cap(3, 60)
    rules = [Rule(trunk), Rule(Concurrency(50, ttl=60), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 5, leases=ids(5))
    assert (decision.allowed, decision.limit, decision.limited_by) == (False, 3, 0)


def test_a_token_bucket_rule_decides_as_the_token_bucket_does(make_limiter: MakeLimiter) -> None:
    bucket = TokenBucket(rate=10)
    limiter = make_limiter(bucket, patient=True)
    first = limiter.acquire_all([Rule(bucket)], 1)
    second = limiter.acquire_all([Rule(bucket)], 2)
    assert (first.granted, first.remaining, second.granted, second.remaining) == (1, 9, 2, 7)
    assert second.reset_after == pytest.approx(0.3, abs=0.05)
    assert limiter.acquire().remaining == 6
    assert limiter.acquire_all([Rule(bucket)], 11).retry_after == float("inf")


def test_a_sliding_window_rule_counts_every_interval_of_its_window(
    make_limiter: MakeLimiter,
) -> None:
    log = SlidingWindow(3, window=LONG)
    limiter = make_limiter(log, patient=True)
    assert limiter.acquire_all([Rule(log)], 2).remaining == 1
    denied = limiter.acquire_all([Rule(log)], 2)
    assert (denied.allowed, denied.limited_by) == (False, 0)
    assert LONG - 1 < denied.retry_after <= LONG
    assert limiter.acquire_all([Rule(log)], 2, partial=True).granted == 1
    assert limiter.peek().remaining == 0
    assert limiter.acquire_all([Rule(log)], 4).retry_after == float("inf")


def test_a_lease_denied_leaves_the_sliding_log_untouched(make_limiter: MakeLimiter) -> None:
    log = SlidingWindow(10, window=LONG)
    limiter = make_limiter(log, patient=True)
    rules = [Rule(log), Rule(Concurrency(1, ttl=60), CAMPAIGN)]
    assert limiter.acquire_all(rules, 1, leases=["a"]).granted == 1
    assert not limiter.acquire_all(rules, 1, leases=["b"]).allowed
    assert limiter.peek().remaining == 9


def test_a_lease_denied_leaves_the_token_bucket_untouched(make_limiter: MakeLimiter) -> None:
    bucket = TokenBucket(rate=10)
    limiter = make_limiter(bucket, patient=True)
    rules = [Rule(bucket), Rule(Concurrency(1, ttl=60), CAMPAIGN)]
    assert limiter.acquire_all(rules, 1, leases=["a"]).granted == 1
    denied = limiter.acquire_all(rules, 1, leases=["b"])
    assert (denied.allowed, denied.limited_by) == (False, 1)
    assert limiter.peek().remaining == 9


@pytest.mark.parametrize(
    ("rules", "permits", "leases"),
    [
        ([], 1, ()),
        ([Rule(PacedWindow(5)), Rule(PacedWindow(5), "a")], 1, ()),
        ([Rule(Concurrency(2, ttl=1))], 2, ("one",)),
        ([Rule(Concurrency(2, ttl=1))], 2, ("one", "one")),
        ([Rule(FixedWindow(2))], 1, ("one",)),
    ],
)
def test_a_malformed_decision_is_refused_before_redis(
    make_limiter: MakeLimiter, rules: list[Rule], permits: int, leases: tuple[str, ...]
) -> None:
    limiter = make_limiter(TRUNK)
    with pytest.raises(ConfigurationError):
        limiter.acquire_all(rules, permits, leases=leases)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Rule(TokenBucket(5), "has space"),
        lambda: Rule(FixedWindow(5), "has space"),
        lambda: Concurrency(0, ttl=1),
        lambda: Concurrency(1, ttl=0),
    ],
)
def test_a_malformed_rule_is_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        make()


def test_while_redis_is_down_fail_open_grants_the_leases_and_records_none() -> None:
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", TRUNK)
    rules = [Rule(TRUNK), Rule(Concurrency(1, ttl=60), CAMPAIGN)]
    decision = limiter.acquire_all(rules, 2, leases=ids(2))
    assert (decision.allowed, decision.fail_open) == (True, True)
    assert decision.leases == ("call-0", "call-1")
    limiter.close()


def test_while_redis_is_down_fail_closed_raises() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with (
        Limiter.from_url(url, TRUNK, fail_mode="closed") as limiter,
        pytest.raises(BackendUnavailable),
    ):
        limiter.acquire_all([Rule(TRUNK)], 1)


def test_another_process_releases_a_lease_by_id(redis_url: str, prefix: str) -> None:
    rules = [Rule(Concurrency(1, ttl=60), CAMPAIGN)]
    with Limiter.from_url(redis_url, TRUNK, prefix=prefix) as limiter:
        assert limiter.acquire_all(rules, 1, leases=["call-x"]).allowed
        code = (
            "import sys, redis; c = redis.Redis.from_url(sys.argv[1]); "
            "print(c.zrem(sys.argv[2], sys.argv[3]))"
        )
        key = limiter.lease_key(CAMPAIGN)
        out = subprocess.run(
            [sys.executable, "-c", code, redis_url, key, "call-x"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "1"
        assert limiter.acquire_all(rules, 1, leases=["call-y"]).allowed


def test_release_is_kept_as_the_old_name_of_free() -> None:
    assert Limiter.release is Limiter.free
    assert AsyncLimiter.release is AsyncLimiter.free
