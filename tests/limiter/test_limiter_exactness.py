"""Exactness under real concurrency: 8 processes with 8 threads each on one key of a real Redis."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis

from cps_limiter import FixedWindow, Limiter, PacedWindow, SlidingWindow, Strategy, TokenBucket
from tests.support.paced import US

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


# The paced window grants by time, not by count: its exactness is that every second's counter
# holds what was granted in it, never more than the limit, and that the permits fit the span of
# the pacer at one per spacing.
PACED_LIMIT = 40
PACED_SPACING_US = US // PACED_LIMIT
PACED_SECONDS = 2.5
"""How long each thread keeps asking: long enough that some whole second is all demand."""
PACED_MAX_WAIT = 0.3
POLL_SECONDS = 0.2
"""Between two reads of the counters while the load runs: a counter expires two seconds after
its second starts and is final one second after, so each is read final at least once."""
GENEROUS_TIMEOUT = 2.0
"""Socket timeouts for a test of exactness: on a busy machine 64 callers must not fail open."""


def pace_hammer(url: str, prefix: str) -> tuple[int, int]:
    """One process: THREADS threads asking for one permit each with PACED_MAX_WAIT, for
    PACED_SECONDS; a denied caller comes back when its slot is within its wait, as the dialer
    does. The permits granted, and the decisions that failed open."""
    limiter = Limiter.from_url(
        url,
        PacedWindow(PACED_LIMIT),
        prefix=prefix,
        deny_cache=False,
        max_connections=THREADS,
        socket_timeout=GENEROUS_TIMEOUT,
        socket_connect_timeout=GENEROUS_TIMEOUT,
    )
    start = threading.Barrier(THREADS)
    granted = [0] * THREADS
    failed_open = [0] * THREADS

    def run(index: int) -> None:
        start.wait()
        deadline = time.monotonic() + PACED_SECONDS
        while time.monotonic() < deadline:
            decision = limiter.acquire(max_wait=PACED_MAX_WAIT)
            granted[index] += decision.granted
            failed_open[index] += decision.fail_open
            if not decision.allowed and math.isfinite(decision.retry_after):
                time.sleep(max(decision.retry_after - PACED_MAX_WAIT, 0.0))  # the back-off

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.close()
    return sum(granted), sum(failed_open)


def redis_clock(client: redis.Redis) -> int:
    """The Redis clock now, in unix microseconds."""
    seconds, micros = client.time()
    return int(seconds) * US + int(micros)


class CounterWatch:
    """Reads the counters of the last, this and the next second every POLL_SECONDS on a thread
    of its own, and keeps the highest value each reached."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._stop = threading.Event()
        self.counts: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run)

    def read(self, seconds: range) -> None:
        values = self._client.mget([f"{self._prefix}:{second}" for second in seconds])
        for second, value in zip(seconds, values, strict=True):
            if value is not None:
                self.counts[second] = max(self.counts.get(second, 0), int(value))

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            now = int(self._client.time()[0])
            self.read(range(now - 1, now + 2))

    def __enter__(self) -> CounterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_paced_permits_from_many_processes_are_counted_exactly_and_keep_each_second_to_the_limit(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    started = redis_clock(client)
    context = multiprocessing.get_context("spawn")
    with CounterWatch(client, prefix) as watch:
        with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
            futures = [pool.submit(pace_hammer, redis_url, prefix) for _ in range(PROCESSES)]
            results = [future.result() for future in futures]
        # Every acquire slept until its permit's moment before returning: none is later.
        ended = redis_clock(client)
        watch.read(range(started // US, ended // US + 1))
    client.close()
    granted = sum(permits for permits, _ in results)
    assert sum(failed for _, failed in results) == 0
    assert sum(watch.counts.values()) == granted
    assert max(watch.counts.values()) == PACED_LIMIT
    # The moments, one spacing apart at least, all fit between the start and the end.
    assert (granted - 1) * PACED_SPACING_US <= ended - started
