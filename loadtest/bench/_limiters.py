"""The comparisons of the limiter itself, in this process: one permit, a batch's ten permits,
many async callers, and requests over the limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from cps_limiter import AsyncLimiter, FixedWindow, Limiter, SlidingWindow, Strategy, TokenBucket
from loadtest._tasks import BATCH

from ._measure import Comparison, Contender, Session

UNLIMITED = 10**6
"""A limit no benchmark reaches (permits per second), so that every request is granted."""
ASYNC_CALLERS = 64


def single_permit(session: Session) -> None:
    ping = redis.Redis.from_url(session.url)
    session.stack.callback(ping.close)
    storage = RedisStorage(session.url)
    item = RateLimitItemPerSecond(UNLIMITED)
    fixed = FixedWindowRateLimiter(storage)
    moving = MovingWindowRateLimiter(storage)
    counter = SlidingWindowCounterRateLimiter(storage)
    ours = {
        "FixedWindow": session.limiter("fixed", FixedWindow(UNLIMITED)),
        "SlidingWindow": session.limiter("sliding", SlidingWindow(UNLIMITED)),
        "TokenBucket": session.limiter("token", TokenBucket(rate=UNLIMITED)),
    }
    key = session.prefix("limits")
    timed = session.timed
    contenders = [
        Contender("PING (one round trip)", timed(ping.ping)),
        *(Contender(f"cps_limiter {n}", timed(lim.acquire)) for n, lim in ours.items()),
        Contender("limits FixedWindow", timed(lambda: fixed.hit(item, key, "f"))),
        Contender("limits MovingWindow", timed(lambda: moving.hit(item, key, "m"))),
        Contender("limits SlidingWindowCounter", timed(lambda: counter.hit(item, key, "s"))),
    ]
    session.add(
        Comparison(
            "single",
            "Single-permit acquire, sync, one client",
            "ops/s",
            "limits FixedWindow",
            contenders,
            session.rounds,
        )
    )


def batch_of_ten(session: Session) -> None:
    item = RateLimitItemPerSecond(UNLIMITED)
    fixed = FixedWindowRateLimiter(RedisStorage(session.url))
    key = session.prefix("limits10")
    ours = session.limiter("fixed10", FixedWindow(UNLIMITED))

    def ten_hits() -> None:
        for _ in range(BATCH):
            fixed.hit(item, key, "ten")

    contenders = [
        Contender(
            "cps_limiter FixedWindow acquire(permits=10)",
            session.timed(lambda: ours.acquire(permits=BATCH), BATCH),
        ),
        Contender("limits FixedWindow, 10 hits", session.timed(ten_hits, BATCH)),
        Contender(
            "limits FixedWindow hit(cost=10)",
            session.timed(lambda: fixed.hit(item, key, "cost", cost=BATCH), BATCH),
            note="for reference: limits can also take 10 at once",
        ),
    ]
    session.add(
        Comparison(
            "batch",
            "Ten permits for a batch of ten tasks",
            "tasks/s",
            "limits FixedWindow, 10 hits",
            contenders,
            session.rounds,
        )
    )


def concurrency(session: Session) -> None:
    sync = session.limiter("sync", FixedWindow(UNLIMITED))
    asynchronous = AsyncLimiter.from_url(
        session.url, FixedWindow(UNLIMITED), prefix=session.prefix("async")
    )
    runner = asyncio.Runner()
    session.stack.callback(runner.close)
    session.stack.callback(lambda: runner.run(asynchronous.aclose()))

    async def callers(seconds: float) -> float:
        done = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await asynchronous.acquire()
                done += 1

        await asyncio.gather(*(caller() for _ in range(ASYNC_CALLERS)))
        return done / (time.perf_counter() - started)

    runner.run(callers(0.1))  # opens the connections
    contenders = [
        Contender("Limiter (sync), one caller", session.timed(sync.acquire)),
        Contender(
            f"AsyncLimiter, {ASYNC_CALLERS} concurrent callers",
            lambda: runner.run(callers(session.slice)),
        ),
    ]
    session.add(
        Comparison(
            "async",
            f"AsyncLimiter with {ASYNC_CALLERS} concurrent callers against the sync client",
            "ops/s",
            "Limiter (sync), one caller",
            contenders,
            session.rounds,
        )
    )


def over_the_limit(session: Session) -> None:
    strategies: dict[str, Callable[[], Strategy]] = {
        "FixedWindow": lambda: FixedWindow(1, window=3600),
        "SlidingWindow": lambda: SlidingWindow(1, window=3600.0),
        "TokenBucket": lambda: TokenBucket(rate=1, period=3600.0),
    }
    grants: dict[str, int] = {}
    contenders: list[Contender] = []
    for name, strategy in strategies.items():
        for cache in (True, False):
            label = f"{name}, deny cache {'on' if cache else 'off'}"
            limiter = session.limiter(f"deny-{name}-{cache}", strategy(), deny_cache=cache)
            limiter.acquire()  # the only permit of the hour: every later request is denied
            grants[label] = 0

            def attempt(limiter: Limiter = limiter, label: str = label) -> None:
                grants[label] += limiter.acquire().granted

            contenders.append(Contender(label, session.timed(attempt)))
    session.add(
        Comparison(
            "deny",
            "Over the limit: denials from the local cache against asking Redis each time",
            "ops/s",
            "FixedWindow, deny cache off",
            contenders,
            session.rounds,
        )
    )
    if any(grants.values()):
        raise AssertionError(f"an exhausted limiter granted permits: {grants}")
    session.notes["deny"] = "No permit was granted by any contender while the key was exhausted."
