"""One run of a fault under a limiter: a load on it, Redis broken, held, healed, and measured."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cps_limiter import AsyncLimiter, Decision, Limiter, Strategy
from tests.support.faults import FAULT_SECONDS, Fault
from tests.support.load import LIMIT, WAIT_TIMEOUT, Load, Sample, hammer, strategy
from tests.support.logs import captured
from tests.support.measure import Measurement

T = TypeVar("T")


class Subject:
    """A Limiter or AsyncLimiter called synchronously from any thread: an AsyncLimiter runs on
    an event loop of its own thread, where the callers' coroutines run concurrently."""

    def __init__(self, url: str, strategy: Strategy, *, kind: str, **options: Any) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if kind == "sync":
            self.limiter: Limiter | AsyncLimiter = Limiter.from_url(url, strategy, **options)
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()

        async def build() -> AsyncLimiter:
            return AsyncLimiter.from_url(url, strategy, **options)

        self.limiter = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def acquire(self, scope: str, permits: int = 1) -> Decision:
        if isinstance(self.limiter, Limiter):
            return self.limiter.acquire(scope, permits)
        return self._run(self.limiter.acquire(scope, permits))

    def peek(self, scope: str) -> Decision:
        if isinstance(self.limiter, Limiter):
            return self.limiter.peek(scope)
        return self._run(self.limiter.peek(scope))

    def close(self) -> None:
        if isinstance(self.limiter, Limiter):
            self.limiter.close()
            return
        self._run(self.limiter.aclose())
        assert self._loop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=WAIT_TIMEOUT)
        self._loop.close()


@dataclass
class FaultRun:
    """Everything one fault run showed."""

    fault: str
    variant: str
    stays_exact: bool
    loses_data: bool
    samples: list[Sample]
    injected: float
    back: float
    recovered: Sample
    hammered: list[Decision]
    before: Decision
    warnings: list[logging.LogRecord]
    fail_open_counted: int

    @property
    def recovery(self) -> float:
        return self.recovered.ended - self.back

    def during(self) -> list[Sample]:
        return [s for s in self.samples if self.injected <= s.started < self.back]

    def errors(self) -> list[BaseException]:
        return [s.error for s in self.samples if s.error is not None]

    def worst(self) -> float:
        return max(s.seconds for s in self.samples)

    def measurement(self) -> Measurement:
        return Measurement(
            component="limiter",
            fault=self.fault,
            variant=self.variant,
            worst_decision_ms=round(self.worst() * 1000, 1),
            recovery_ms=round(self.recovery * 1000, 1),
            decisions=len(self.samples),
            fail_open=sum(1 for s in self.samples if s.decision and s.decision.fail_open),
            notes={"errors": len(self.errors()), "stays_exact": self.stays_exact},
        )


def run_fault(
    fault: Fault,
    *,
    strategy_name: str,
    kind: str = "sync",
    fail_mode: str = "open",
    stays_exact: bool = False,
    fail_open_count: Callable[[], int] = lambda: 0,
) -> FaultRun:
    """Run the load on a limiter, break Redis under it, hold, heal, and measure.

    Each load decision takes a permit of a scope of its own, so that none is ever denied from
    the limiter's local cache: every one of them asks Redis (or meets the breaker).
    """
    subject = Subject(
        fault.url, strategy(strategy_name, LIMIT), kind=kind, prefix="rel", fail_mode=fail_mode
    )
    scopes = itertools.count()
    try:
        assert subject.acquire("before", LIMIT).granted == LIMIT
        counted_before = fail_open_count()
        with (
            captured("cps_limiter") as logs,
            Load(lambda: subject.acquire(f"load-{next(scopes)}")) as load,
        ):
            load.wait_for(lambda s: s.exact)
            injected = time.monotonic()
            fault.inject()
            if fault.held:
                if not stays_exact:
                    load.wait_for(lambda s: s.started >= injected and not s.exact)
                time.sleep(max(0.0, injected + FAULT_SECONDS - time.monotonic()))
                fault.heal()
            back = time.monotonic()
            recovered = load.wait_for(lambda s: s.started >= back and s.exact)
        hammered = hammer(lambda: subject.acquire("after"))
        before = subject.peek("before")
        return FaultRun(
            fault=fault.name,
            variant=f"{kind}-{strategy_name}-{fail_mode}",
            stays_exact=stays_exact,
            loses_data=fault.loses_data,
            samples=list(load.samples),
            injected=injected,
            back=back,
            recovered=recovered,
            hammered=hammered,
            before=before,
            warnings=[r for r in logs.records if r.levelno == logging.WARNING],
            fail_open_counted=fail_open_count() - counted_before,
        )
    finally:
        subject.close()
