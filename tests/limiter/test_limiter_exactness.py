"""Exactness under real concurrency: 8 processes with 8 threads each on one key of a real Redis."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import pytest

from cps_limiter import FixedWindow, Limiter, SlidingWindow, Strategy, TokenBucket

PROCESSES = 8
THREADS = 8
ATTEMPTS_PER_THREAD = 12
LIMIT = 500  # below the 8 * 8 * 12 = 768 attempts, so every strategy must deny some

# Windows far longer than the test, so that nothing refills while it runs: the count granted
# must then equal the limit exactly.
LONG = 10**9
STRATEGIES: dict[str, Strategy] = {
    "fixed": FixedWindow(LIMIT, window=LONG),
    "sliding": SlidingWindow(LIMIT, window=LONG),
    "token": TokenBucket(rate=LIMIT, period=LONG),
}


def hammer(url: str, strategy: Strategy, prefix: str, permits: int, partial: bool) -> int:
    """One process: THREADS threads acquiring as fast as they can; the permits they got."""
    limiter = Limiter.from_url(url, strategy, prefix=prefix, deny_cache=False, max_connections=64)
    start = threading.Barrier(THREADS)
    granted = [0] * THREADS

    def run(index: int) -> None:
        start.wait()
        for _ in range(ATTEMPTS_PER_THREAD):
            decision = limiter.acquire(permits=permits, partial=partial)
            assert not decision.fail_open
            granted[index] += decision.granted

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.close()
    return sum(granted)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize(("permits", "partial"), [(1, False), (3, True)])
def test_total_granted_equals_the_limit_exactly(
    redis_url: str, prefix: str, name: str, permits: int, partial: bool
) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(hammer, redis_url, STRATEGIES[name], prefix, permits, partial)
            for _ in range(PROCESSES)
        ]
        total = sum(future.result() for future in futures)
    assert total == LIMIT
