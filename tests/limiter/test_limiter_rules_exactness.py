"""Exactness of one decision over several rules under real concurrency: processes x threads on
a real Redis, a trunk and two campaigns, each rule binding for some callers. No rule is ever
exceeded, and no permit or lease is left taken when another rule denied."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis

from cps_limiter import (
    AsyncLimiter,
    Concurrency,
    FixedWindow,
    Limiter,
    PacedWindow,
    Rule,
    SlidingWindow,
    TokenBucket,
)

PROCESSES = 4
THREADS = 4
ATTEMPTS_PER_THREAD = 12
LONG = 10**9
"""Windows and leases far longer than the test: the counts only change by its own calls."""
TRUNK = FixedWindow(35, window=LONG)
TRUNKS: dict[str, FixedWindow | SlidingWindow | TokenBucket] = {
    "fixed": TRUNK,
    "sliding": SlidingWindow(35, window=LONG),
    "token": TokenBucket(rate=35, burst=35, period=LONG),
}
CAMPAIGNS = {
    # Concurrency binds campaign a (20 leases < 30 a window) ...
    "campaign:a": (FixedWindow(30, window=LONG), Concurrency(20, ttl=LONG)),
    # ... its CPS binds campaign b (18 a window < 25 leases); together they want 38 > 35.
    "campaign:b": (FixedWindow(18, window=LONG), Concurrency(25, ttl=LONG)),
}
GENEROUS_TIMEOUT = 2.0
ASYNC_IN_FLIGHT = 32


def rules_of(scope: str, trunk: FixedWindow | SlidingWindow | TokenBucket = TRUNK) -> list[Rule]:
    cps, leases = CAMPAIGNS[scope]
    return [Rule(trunk), Rule(cps, scope), Rule(leases, scope)]


def hammer(
    url: str, prefix: str, permits: int, trunk: FixedWindow | SlidingWindow | TokenBucket
) -> dict[str, list[str]]:
    """One process: THREADS threads taking permits on both campaigns in turn; the leases each
    campaign granted here."""
    limiter = Limiter.from_url(
        url,
        trunk,
        prefix=prefix,
        max_connections=THREADS,
        socket_timeout=GENEROUS_TIMEOUT,
        socket_connect_timeout=GENEROUS_TIMEOUT,
    )
    start = threading.Barrier(THREADS)
    taken: dict[str, list[str]] = {scope: [] for scope in CAMPAIGNS}
    lock = threading.Lock()

    def run(thread: int) -> None:
        start.wait()
        for attempt in range(ATTEMPTS_PER_THREAD):
            scope = sorted(CAMPAIGNS)[(thread + attempt) % len(CAMPAIGNS)]
            leases = [f"{os.getpid()}-{thread}-{attempt}-{k}" for k in range(permits)]
            decision = limiter.acquire_all(
                rules_of(scope, trunk), permits, partial=permits > 1, leases=leases
            )
            assert not decision.fail_open
            with lock:
                taken[scope] += decision.leases

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.close()
    return taken


def check(
    client: redis.Redis, limiter: Limiter, taken: dict[str, Sequence[str]], counted: bool = True
) -> None:
    """Each rule at its bound and no further, and every count backed by a lease granted; the
    trunk's own count is read from its counters when it keeps them (``counted``)."""
    keys = client.keys(f"{limiter.prefix}:[0-9]*")
    trunk = sum(int(client.get(key) or 0) for key in keys) if counted else TRUNK.limit
    total = 0
    for scope, (cps, concurrency) in CAMPAIGNS.items():
        counted = sum(
            int(client.get(key) or 0) for key in client.keys(f"{limiter.prefix}:{scope}:[0-9]*")
        )
        leases = {member.decode() for member in client.zrange(limiter.lease_key(scope), 0, -1)}
        assert leases == set(taken[scope])
        assert len(taken[scope]) == counted
        assert counted <= min(cps.limit, concurrency.limit)
        total += counted
    assert total == trunk


@pytest.mark.slow
@pytest.mark.parametrize("permits", [1, 2])
@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_no_rule_is_exceeded_and_nothing_leaks_across_processes(
    redis_url: str, prefix: str, permits: int, trunk: str
) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(hammer, redis_url, prefix, permits, TRUNKS[trunk]) for _ in range(PROCESSES)
        ]
        taken: dict[str, list[str]] = {scope: [] for scope in CAMPAIGNS}
        for future in futures:
            for scope, leases in future.result().items():
                taken[scope] += leases
    client = redis.Redis.from_url(redis_url)
    with Limiter(client, TRUNK, prefix=prefix) as limiter:
        check(client, limiter, taken, counted=trunk == "fixed")
    client.close()


async def test_no_rule_is_exceeded_by_concurrent_async_callers(redis_url: str, prefix: str) -> None:
    limiter = AsyncLimiter.from_url(redis_url, TRUNK, prefix=prefix, decision_timeout=2.0)
    taken: dict[str, list[str]] = {scope: [] for scope in CAMPAIGNS}

    # Fewer callers in flight than the pool's connections: one waiting for a connection longer
    # than the pool allows would fail open, which is not what this test is about.
    in_flight = asyncio.Semaphore(ASYNC_IN_FLIGHT)

    async def one(n: int) -> None:
        scope = sorted(CAMPAIGNS)[n % len(CAMPAIGNS)]
        async with in_flight:
            decision = await limiter.acquire_all(rules_of(scope), 1, leases=[f"async-{n}"])
        assert not decision.fail_open
        taken[scope] += decision.leases

    await asyncio.gather(*(one(n) for n in range(120)))
    await limiter.aclose()
    client = redis.Redis.from_url(redis_url)
    with Limiter(client, TRUNK, prefix=prefix) as sync:
        check(client, sync, taken)
    client.close()


PACED = PacedWindow(40)
PACED_CAMPAIGNS = {"campaign:p": Concurrency(6, ttl=LONG), "campaign:q": Concurrency(4, ttl=LONG)}


def test_a_paced_trunk_counts_exactly_the_permits_its_campaigns_leased(
    redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(
        redis_url,
        PACED,
        prefix=prefix,
        max_connections=THREADS * 2,
        socket_timeout=GENEROUS_TIMEOUT,
        socket_connect_timeout=GENEROUS_TIMEOUT,
    )
    start = threading.Barrier(THREADS * 2)
    taken: dict[str, list[str]] = {scope: [] for scope in PACED_CAMPAIGNS}

    def run(thread: int) -> None:
        start.wait()
        for attempt in range(ATTEMPTS_PER_THREAD):
            scope = sorted(PACED_CAMPAIGNS)[(thread + attempt) % 2]
            rules = [Rule(PACED), Rule(PACED_CAMPAIGNS[scope], scope)]
            decision = limiter.acquire_all(rules, 1, max_wait=0.2, leases=[f"{thread}-{attempt}"])
            assert not decision.fail_open
            taken[scope] += decision.leases

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = limiter.client
    counted = sum(int(client.get(key) or 0) for key in client.keys(f"{prefix}:[0-9]*"))
    for scope, concurrency in PACED_CAMPAIGNS.items():
        members = {m.decode() for m in client.zrange(limiter.lease_key(scope), 0, -1)}
        assert members == set(taken[scope])
        assert len(members) == concurrency.limit
    # Every permit the trunk counted was leased: none was left counted by a denial.
    assert counted == sum(c.limit for c in PACED_CAMPAIGNS.values())
    limiter.close()
