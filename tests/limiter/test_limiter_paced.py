"""PacedWindow: the fixed window's ``{prefix}:<ts>`` counters, with the permits spaced evenly.

Where a permit's moment is needed on the Redis clock, it is read from the pacer key
(``{prefix}:pace``, the next free moment in microseconds since the script's epoch) right after
the grant, by the only caller: the grant's last permit is one spacing before it, and the
others are the grant's ``schedule`` before that.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import redis

from cps_limiter import AdaptivePolicy, AsyncLimiter, Decision, Limiter, PacedWindow, _core
from cps_limiter._scripts import GRANT_REPLY_LENGTH, parse_reply
from tests.conftest import PATIENT, PATIENT_DECISION_TIMEOUT, SyncFacade
from tests.support.commands import script_calls
from tests.support.paced import US, next_free

LIMIT = 20
SPACING_US = US // LIMIT
SPACING = SPACING_US / 1e6
PACED_REPLY_LENGTH = 8
"""The full reply's seven fields and the later permits' offsets."""

MakeLimiter = Callable[..., SyncFacade]


def pace(limiter: SyncFacade) -> int | None:
    """The pacer's next free moment, in microseconds since the unix epoch, or None."""
    return next_free(limiter.command("GET", f"{limiter.limiter.prefix}:pace"))


def moments_of(decision: Decision, free: int | None, spacing_us: int = SPACING_US) -> list[int]:
    """The moments (unix microseconds) of a grant's permits, from the pacer read right after it."""
    assert decision.granted
    assert free is not None
    offsets = [round(offset * US) for offset in decision.schedule or (0.0,)]
    last = free - spacing_us
    return [last - offsets[-1] + offset for offset in offsets]


def counter(limiter: SyncFacade, second: int) -> int:
    raw = limiter.command("GET", f"{limiter.limiter.prefix}:{second}")
    return 0 if raw is None else int(raw)


def server_us(limiter: SyncFacade) -> int:
    """The Redis clock now, in unix microseconds."""
    seconds, micros = limiter.command("TIME")
    return int(seconds) * US + int(micros)


@dataclass(frozen=True)
class Call:
    before: int
    """The Redis clock just before the call (unix microseconds)."""
    decision: Decision
    moments: list[int]
    after: int
    """The Redis clock just after acquire returned (it has slept to its first permit)."""


def paced_calls(
    limiter: SyncFacade,
    requests: list[tuple[int, bool, float]],
    counts: dict[int, int] | None = None,
) -> list[Call]:
    """Each ``(permits, partial, max_wait)`` in turn, each granting at least one permit, with
    the moments of what it granted; ``counts`` gets the counter of each second a call granted
    a permit in, read right after it (a counter read later may have expired)."""
    calls = []
    for permits, partial, max_wait in requests:
        before = server_us(limiter)
        decision = limiter.acquire(permits=permits, partial=partial, max_wait=max_wait)
        assert decision.granted, (permits, partial, max_wait)
        moments = moments_of(decision, pace(limiter))
        calls.append(Call(before, decision, moments, server_us(limiter)))
        if counts is not None:
            counts.update({s: counter(limiter, s) for s in {m // US for m in moments}})
    return calls


@pytest.fixture
def make_paced(make_limiter: MakeLimiter) -> MakeLimiter:
    """`make_limiter` with patient timeouts: these tests are about what Redis decides."""
    return functools.partial(make_limiter, patient=True)


MIXED = [(1, False, 1.0), (3, False, 1.0), (4, True, 0.2), (1, False, 1.0), (2, True, 0.3)]
"""Requests made one after another: all but the first wait for the pacer, and each grants one
or several permits."""


# --- The counters --------------------------------------------------------------------------------


def test_each_permit_is_counted_in_the_counter_of_the_second_it_falls_in(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    decision = limiter.acquire(permits=50, max_wait=3.0)  # 2.45 s of moments
    moments = moments_of(decision, pace(limiter))
    expected = Counter(moment // US for moment in moments)
    assert decision.granted == 50
    assert len(expected) >= 3
    assert {second: counter(limiter, second) for second in expected} == expected


def test_a_caller_that_keeps_asking_fills_a_second_to_the_limit_and_never_past_it(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    counts: dict[int, int] = {}
    granted = 0
    # Each call reserves what fits in half a second of the pacer's future: 2.2 s in all.
    for call in paced_calls(limiter, [(8, True, 0.5)] * 8, counts):
        granted += call.decision.granted
    assert sum(counts.values()) == granted
    assert max(counts.values()) == LIMIT


def test_a_lower_cap_mid_window_puts_nothing_more_in_a_window_already_at_it(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT), adaptive=AdaptivePolicy())
    first = limiter.acquire(permits=10, max_wait=1.0)
    seconds = {moment // US for moment in moments_of(first, pace(limiter))}
    full = {second for second in seconds if counter(limiter, second) >= 4}
    limiter.set_cap(4, ttl=60)
    capped = limiter.acquire(permits=6, max_wait=3.0)
    later = {moment // US for moment in moments_of(capped, pace(limiter), spacing_us=US // 4)}
    assert (capped.limit, capped.granted) == (4, 6)
    assert full  # ten permits in at most two seconds: one holds five or more
    assert not later & full
    assert all(counter(limiter, second) <= 4 for second in later)


def test_every_key_expires_by_itself(make_paced: MakeLimiter) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    decision = limiter.acquire(permits=50, max_wait=3.0)
    free = pace(limiter)
    now = server_us(limiter)
    seconds = {moment // US for moment in moments_of(decision, free)}
    prefix = limiter.limiter.prefix
    expiries = {second: limiter.command("PTTL", f"{prefix}:{second}") for second in seconds}
    pacer = limiter.command("PTTL", f"{prefix}:pace")
    assert free is not None
    # A counter lives until the end of the window after its own (the PTTL is rounded up to 1 ms).
    assert min(expiries.values()) > 0
    assert all(now + ms * 1000 <= (s + 2) * US + 2000 for s, ms in expiries.items())
    assert expiries[now // US] <= 2000
    # The pacer lives until a window after it is idle.
    assert pacer > 0
    assert now + pacer * 1000 <= free + US + 2000


# --- The moments ---------------------------------------------------------------------------------


def test_consecutive_permits_are_at_least_one_spacing_apart_on_the_redis_clock(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    moments = [moment for call in paced_calls(limiter, MIXED) for moment in call.moments]
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert len(moments) >= len(MIXED) + 3
    assert min(gaps) >= SPACING_US


def test_no_permit_has_a_moment_before_the_call_that_granted_it(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    calls = paced_calls(limiter, MIXED)
    assert all(call.decision.waited >= 0 for call in calls)
    assert all(call.moments[0] >= call.before for call in calls)


def test_acquire_returns_no_earlier_than_its_first_permits_moment(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    calls = paced_calls(limiter, MIXED)
    assert all(call.after >= call.moments[0] for call in calls)
    assert any(call.decision.waited > 0 for call in calls)


def test_the_schedule_starts_at_zero_and_steps_by_the_spacing(make_paced: MakeLimiter) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    for call in paced_calls(limiter, MIXED):
        schedule = call.decision.schedule or (0.0,)
        assert schedule == tuple(k * SPACING_US / US for k in range(call.decision.granted))


@pytest.mark.parametrize(
    ("headroom", "spacing_us"), [(0.0, 50_000), (0.03, 51_500), (0.25, 62_500)]
)
def test_the_headroom_widens_the_spacing(
    make_paced: MakeLimiter, headroom: float, spacing_us: int
) -> None:
    limiter = make_paced(PacedWindow(LIMIT, headroom=headroom))
    decision = limiter.acquire(permits=4, max_wait=1.0)
    assert decision.schedule == tuple(k * spacing_us / US for k in range(4))


# --- max_wait: what fits, what never will, and when to come back ---------------------------------


def test_partial_grants_only_the_slots_within_max_wait(make_paced: MakeLimiter) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    decision = limiter.acquire(permits=10, partial=True, max_wait=0.12)
    assert (decision.allowed, decision.granted) == (True, 3)
    assert decision.schedule == (0.0, 0.05, 0.1)


def test_all_or_nothing_spanning_more_than_max_wait_is_denied_for_ever(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    decision = limiter.acquire(permits=10, max_wait=0.12)
    assert (decision.allowed, decision.granted, decision.retry_after) == (False, 0, float("inf"))
    assert pace(limiter) is None  # nothing taken


def test_all_or_nothing_that_fits_max_wait_but_not_yet_says_when_its_first_slot_is_free(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    started = time.monotonic()
    assert limiter.acquire().allowed
    # Three permits span 0.1 s, within 0.12; the first free slot is one spacing away.
    decision = limiter.acquire(permits=3, max_wait=0.12)
    elapsed = time.monotonic() - started
    assert (decision.allowed, decision.granted) == (False, 0)
    assert SPACING - elapsed <= decision.retry_after <= SPACING


def test_a_single_permit_right_after_another_is_denied_for_about_one_spacing(
    make_paced: MakeLimiter,
) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    started = time.monotonic()
    assert limiter.acquire().allowed
    decision = limiter.acquire()
    elapsed = time.monotonic() - started
    assert not decision.allowed
    assert SPACING - elapsed <= decision.retry_after <= SPACING


@pytest.mark.parametrize("adaptive", [None, AdaptivePolicy()])
def test_a_single_permit_for_now_answers_the_short_reply_and_a_wait_the_full_one(
    make_paced: MakeLimiter, monkeypatch: pytest.MonkeyPatch, adaptive: AdaptivePolicy | None
) -> None:
    """The common case formats no strings on the server: a permit for now gets the short
    reply (its decision whole, the pacer idle again one spacing on); one that must wait gets
    the full reply, which carries the wait."""
    lengths: list[int] = []
    parse = parse_reply

    def measured(reply: Sequence[bytes | str | int]) -> tuple[Decision, float]:
        lengths.append(len(reply))
        return parse(reply)

    monkeypatch.setattr(_core, "parse_reply", measured)
    limiter = make_paced(PacedWindow(LIMIT), adaptive=adaptive)
    started = time.monotonic()
    now = limiter.acquire()
    elapsed = time.monotonic() - started
    later = limiter.acquire(max_wait=1.0)

    assert lengths == [GRANT_REPLY_LENGTH, PACED_REPLY_LENGTH]
    assert (now.allowed, now.granted, now.limit, now.schedule, now.waited) == (
        True,
        1,
        LIMIT,
        (),
        0.0,
    )
    assert now.remaining == LIMIT - 1
    assert SPACING - elapsed <= now.reset_after <= SPACING
    assert (later.allowed, later.granted) == (True, 1)
    assert 0.0 < later.waited <= SPACING


def test_a_max_wait_exactly_covering_the_permits_spacing_grants_them(
    make_paced: MakeLimiter,
) -> None:
    # 41 spacings of 1/80 s are 0.5125 s, which a double holds as a hair less.
    limiter = make_paced(PacedWindow(80))
    decision = limiter.acquire(permits=42, max_wait=41 / 80)
    assert (decision.allowed, decision.granted) == (True, 42)


# --- peek, reset, the names of the keys ----------------------------------------------------------


def test_peek_consumes_nothing(make_paced: MakeLimiter) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    assert limiter.peek().allowed
    assert pace(limiter) is None
    limiter.acquire(permits=3, max_wait=1.0)
    prefix = limiter.limiter.prefix
    keys = sorted(limiter.command("KEYS", f"{prefix}*"))
    values = [limiter.command("GET", key) for key in keys]
    peeked = limiter.peek()
    assert (peeked.allowed, peeked.granted) == (False, 0)
    assert [limiter.command("GET", key) for key in keys] == values


def test_reset_forgets_the_pacer_and_the_counters(make_paced: MakeLimiter) -> None:
    limiter = make_paced(PacedWindow(LIMIT))
    limiter.acquire(permits=30, max_wait=2.0)
    limiter.reset()
    assert limiter.command("KEYS", f"{limiter.limiter.prefix}*") == []
    decision = limiter.acquire()
    assert (decision.allowed, decision.waited) == (True, 0.0)


@pytest.mark.parametrize("window", [1, 11])
def test_the_counter_is_named_after_its_windows_start_in_unix_seconds(
    make_paced: MakeLimiter, window: int
) -> None:
    """As the fixed window names its counters (``cps:<ts>``), for any window."""
    limiter = make_paced(PacedWindow(LIMIT, window=window))
    before = server_us(limiter) // US
    limiter.acquire()
    after = server_us(limiter) // US
    prefix = limiter.limiter.prefix
    (key,) = limiter.command("KEYS", f"{prefix}:[0-9]*")
    start = int(key.decode().removeprefix(f"{prefix}:"))
    assert start % window == 0
    assert before - window < start <= after


# --- One round trip; sync and async alike --------------------------------------------------------


@pytest.mark.parametrize(
    ("permits", "partial", "max_wait"),
    [(1, False, 0.0), (5, False, 1.0), (5, True, 0.1), (50, False, 0.1), (0, False, 0.0)],
)
def test_a_decision_is_one_evalsha(
    raw_redis: redis.Redis,
    redis_url: str,
    prefix: str,
    permits: int,
    partial: bool,
    max_wait: float,
) -> None:
    limiter = Limiter.from_url(redis_url, PacedWindow(LIMIT), prefix=prefix, **PATIENT)
    limiter.peek()  # loads the script
    calls = script_calls(
        raw_redis, lambda: limiter.acquire(permits=permits, partial=partial, max_wait=max_wait)
    )
    limiter.close()
    # The decision is a single EVALSHA.
    assert calls == {"cmdstat_evalsha": 1}


async def test_sync_and_async_give_the_same_decisions(backend_url: str, prefix: str) -> None:
    # An hour's window: the spacing is 15 minutes, so that nothing a test does in between
    # moves a decision by more than the tolerance, and every grant's first permit is now.
    strategy = PacedWindow(4, window=3600)
    options = {"deny_cache": False, **PATIENT}
    sync = Limiter.from_url(backend_url, strategy, prefix=f"{prefix}s", **options)
    asyn = AsyncLimiter.from_url(
        backend_url,
        strategy,
        prefix=f"{prefix}a",
        decision_timeout=PATIENT_DECISION_TIMEOUT,
        **options,
    )
    requests = [
        (1, False, 0.0), (1, False, 0.0), (3, False, 1000.0), (3, True, 0.0), (0, False, 0.0),
        None, (3, False, 2000.0), (2, True, 0.0),
    ]  # fmt: skip
    for request in requests:
        if request is None:
            sync.reset()
            await asyn.reset()
            continue
        permits, partial, max_wait = request
        a = sync.acquire(permits=permits, partial=partial, max_wait=max_wait)
        b = await asyn.acquire(permits=permits, partial=partial, max_wait=max_wait)
        assert (a.allowed, a.granted, a.limit, a.remaining, a.schedule, a.waited) == (
            b.allowed, b.granted, b.limit, b.remaining, b.schedule, b.waited,
        ), request  # fmt: skip
        assert a.retry_after == pytest.approx(b.retry_after, abs=1.0), request
        assert a.reset_after == pytest.approx(b.reset_after, abs=1.0), request
    sync.close()
    await asyn.aclose()
