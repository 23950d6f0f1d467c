"""The decisions the server-side comparisons take, one per contender, each on its own key: ours
for every strategy and the dialer's own configuration, and `limits`' strategies. Built the same
way in the bench's process (Redis CPU per decision) and in the hammering children (saturation),
so that both measure the same requests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from cps_limiter import (
    AdaptivePolicy,
    FixedWindow,
    Limiter,
    PacedWindow,
    SlidingWindow,
    Strategy,
    TokenBucket,
)
from dialer_lambda import Settings
from dialer_lambda._dialer import strategy_for

from ._main import main_name, on_main

UNLIMITED = 10**6
"""A limit no benchmark reaches (permits per second), so that every request is granted."""
DIALER = "dialer configuration (PacedWindow + AdaptivePolicy)"
DIALER_MAX_WAIT = 2.0
"""The dialer's default ``RATE_LIMIT_MAX_WAIT_SECONDS``: a batch asks with its wait budget."""
OURS: dict[str, Callable[[], Strategy]] = {
    "cps_limiter FixedWindow": lambda: FixedWindow(UNLIMITED),
    "cps_limiter PacedWindow": lambda: PacedWindow(UNLIMITED),
    "cps_limiter SlidingWindow": lambda: SlidingWindow(UNLIMITED),
    "cps_limiter TokenBucket": lambda: TokenBucket(rate=UNLIMITED),
}
NAMES = (
    *(n for name in OURS for n in (name, main_name(name))),
    DIALER,
    main_name(DIALER),
    "limits FixedWindow",
    "limits MovingWindow",
    "limits SlidingWindowCounter",
)

Decide = Callable[[], object]


def _dialer_limiter(url: str, prefix: str) -> Limiter:
    """The limiter as `dialer_lambda.Dialer.from_settings` builds it, at an unreachable
    ``MAX_CPS``: the default strategy (paced), fail mode and peers, the adaptive policy on."""
    settings = Settings(redis_url=url, max_cps=UNLIMITED)
    return Limiter.from_url(
        url,
        strategy_for(settings),
        prefix=prefix,
        fail_mode=settings.fail_mode,
        adaptive=AdaptivePolicy(),
        peers=settings.fallback_containers,
    )


def _same(limiter: Limiter) -> Limiter:
    return limiter


def _batch_request(dialer: Limiter) -> Decide:
    """A batch's request shape, for one task: partial grants, waiting up to its budget."""
    return lambda: dialer.acquire(permits=1, partial=True, max_wait=DIALER_MAX_WAIT)


def decisions(url: str, prefix: str, stack: contextlib.ExitStack) -> dict[str, Decide]:
    """One single-permit decision per contender (`NAMES`), keys under ``prefix``; processes
    given the same prefix share each contender's key, as the callers of one limit do."""
    found: dict[str, Decide] = {}
    # main's rows on keys of their own: its scripts and ours never count on one key.
    for side, label, change in (("", str, _same), ("-main", main_name, on_main)):
        for name, strategy in OURS.items():
            key = f"{prefix}-{name.split()[-1]}{side}"
            limiter = Limiter.from_url(url, strategy(), prefix=key)
            stack.callback(limiter.close)
            found[label(name)] = change(limiter).acquire
        dialer = change(_dialer_limiter(url, f"{prefix}-dialer{side}"))
        stack.callback(dialer.close)
        found[label(DIALER)] = _batch_request(dialer)
    storage = RedisStorage(url)
    item = RateLimitItemPerSecond(UNLIMITED)
    fixed = FixedWindowRateLimiter(storage)
    moving = MovingWindowRateLimiter(storage)
    counter = SlidingWindowCounterRateLimiter(storage)
    found["limits FixedWindow"] = lambda: fixed.hit(item, prefix, "f")
    found["limits MovingWindow"] = lambda: moving.hit(item, prefix, "m")
    found["limits SlidingWindowCounter"] = lambda: counter.hit(item, prefix, "s")
    return found
