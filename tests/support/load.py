"""A load that records every decision with its latency, bursts of threads released at once,
and the limits the reliability tests run at."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cps_limiter import Decision, FixedWindow, SlidingWindow, Strategy, TokenBucket

T = TypeVar("T")

LOAD_THREADS = 4
LOAD_PAUSE = 0.002
"""Seconds between two decisions of one load thread: a steady load, not a busy loop."""
WAIT_TIMEOUT = 10.0
LIMIT = 40
HAMMER_THREADS = 8
HAMMER_ATTEMPTS = 10  # 8 * 10 = 80 attempts at a limit of 40: every strategy must deny some
LONG = 10**9
"""A window far longer than the test, so that nothing refills or rolls over while it runs."""
STRATEGY_NAMES = ("fixed", "sliding", "token")


def strategy(name: str, limit: int) -> Strategy:
    """A strategy whose count cannot change by the clock during a test (unlike the dialer's,
    `dialer_lambda.strategy_for`, which refill every second)."""
    if name == "fixed":
        return FixedWindow(limit, window=LONG)
    if name == "sliding":
        return SlidingWindow(limit, window=float(LONG))
    return TokenBucket(rate=limit, period=float(LONG))


@dataclass(frozen=True)
class Sample:
    """One decision: when it started (monotonic), how long it took, and what it gave."""

    started: float
    seconds: float
    decision: Decision | None
    error: BaseException | None

    @property
    def ended(self) -> float:
        return self.started + self.seconds

    @property
    def exact(self) -> bool:
        """Decided by Redis: neither failed open nor raised."""
        return self.decision is not None and not self.decision.fail_open


class Load:
    """Threads calling ``decide`` in a steady loop until stopped; every call is a `Sample`.

    Exceptions are recorded, not raised: the tests assert that there are none (or, fail
    closed, that they are the expected ones).
    """

    def __init__(self, decide: Callable[[], Decision], threads: int = LOAD_THREADS) -> None:
        self._decide = decide
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.samples: list[Sample] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WAIT_TIMEOUT)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            decision: Decision | None = None
            error: BaseException | None = None
            try:
                decision = self._decide()
            except Exception as exc:
                error = exc
            sample = Sample(started, time.monotonic() - started, decision, error)
            with self._changed:
                self.samples.append(sample)
                self._changed.notify_all()
            self._stop.wait(LOAD_PAUSE)

    def wait_for(
        self, predicate: Callable[[Sample], bool], timeout: float = WAIT_TIMEOUT
    ) -> Sample:
        """The first sample (already taken or still to come) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for sample in self.samples[seen:]:
                    if predicate(sample):
                        return sample
                seen = len(self.samples)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such decision within {timeout}s")
                self._changed.wait(left)

    def since(self, moment: float) -> list[Sample]:
        with self._lock:
            return [sample for sample in self.samples if sample.started >= moment]

    def errors(self) -> list[BaseException]:
        with self._lock:
            return [sample.error for sample in self.samples if sample.error is not None]

    def worst(self) -> float:
        with self._lock:
            return max(sample.seconds for sample in self.samples)


def burst(call: Callable[[], T], threads: int, attempts: int = 1) -> list[tuple[float, T]]:
    """``threads`` threads released at once, each making ``attempts`` calls; each call's
    result with the seconds it took."""
    start = threading.Barrier(threads)
    results: list[tuple[float, T]] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        mine = []
        for _ in range(attempts):
            began = time.monotonic()
            result = call()
            mine.append((time.monotonic() - began, result))
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=WAIT_TIMEOUT)
    return results


def hammer(acquire: Callable[[], Decision]) -> list[Decision]:
    """HAMMER_THREADS threads released at once, each taking HAMMER_ATTEMPTS decisions."""
    return [decision for _, decision in burst(acquire, HAMMER_THREADS, HAMMER_ATTEMPTS)]


async def async_hammer(acquire: Callable[[], Coroutine[Any, Any, Decision]]) -> list[Decision]:
    """HAMMER_THREADS coroutines at once, each taking HAMMER_ATTEMPTS decisions in turn."""

    async def one() -> list[Decision]:
        return [await acquire() for _ in range(HAMMER_ATTEMPTS)]

    rounds = await asyncio.gather(*(one() for _ in range(HAMMER_THREADS)))
    return [decision for decisions in rounds for decision in decisions]
