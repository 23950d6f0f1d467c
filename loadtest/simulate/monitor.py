"""The health agent of the dialing host, as the run uses it: `Monitor` samples the worker's
health and the limit in force while the campaign runs."""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cps_limiter import FixedWindow, Limiter, TokenBucket
from loadtest.worker_stub import StubHandle, StubHealth

MONITOR_INTERVAL_SECONDS: Final = 0.1


_RATE_VIEWS: weakref.WeakKeyDictionary[Limiter, Limiter] = weakref.WeakKeyDictionary()


def limit_in_force(limiter: Limiter) -> float:
    """Calls per second in force now, as the limiter's own scripts compute it. A token bucket's
    decision carries its burst as its limit, so its rate in force is read through a one-second
    window on the same adaptive state (the cap and health tiers scale both alike)."""
    strategy = limiter.strategy
    if not isinstance(strategy, TokenBucket):
        return float(limiter.peek().limit)
    view = _RATE_VIEWS.get(limiter)
    if view is None:
        per_second = max(round(strategy.rate / strategy.period), 1)
        view = Limiter(
            limiter.client,
            FixedWindow(per_second),
            prefix=limiter.prefix,
            adaptive=limiter.adaptive,
        )
        _RATE_VIEWS[limiter] = view
    return float(view.peek().limit)


@dataclass
class Monitor:
    """The health agent: samples the worker's health and the limit in force while the
    campaign runs, and raises the worker's CPU when the run asks for it."""

    stub: StubHandle
    on_health: Callable[[StubHealth], None]
    limit_in_force: Callable[[], float]
    started: float
    cpu_spike_at: float | None
    cpu_spike_percent: float
    stop: threading.Event = field(default_factory=threading.Event)
    health: list[tuple[float, StubHealth]] = field(default_factory=list)
    limits: list[tuple[float, float]] = field(default_factory=list)
    spiked_at: float | None = None
    problems: Counter[str] = field(default_factory=Counter)

    def run(self) -> None:
        while True:
            elapsed = time.time() - self.started
            spike_due = self.cpu_spike_at is not None and elapsed >= self.cpu_spike_at
            if spike_due and self.spiked_at is None:
                if not self.health:
                    # The health before the spike, however late this thread got to run.
                    self._try("sample the worker's health", self._sample_health, elapsed)
                self.spiked_at = elapsed
                self._try("raise the worker's CPU", self._spike, elapsed)
            self._try("sample the worker's health", self._sample_health, elapsed)
            self._try("read the limit in force", self._sample_limit, elapsed)
            if self.stop.wait(MONITOR_INTERVAL_SECONDS):
                return

    def _try(self, what: str, action: Callable[[float], None], elapsed: float) -> None:
        # Best effort, like a real agent: a worker without /health (or a Redis that is down)
        # must not end the run; the first failure of each kind is shown.
        try:
            action(elapsed)
        except Exception as error:
            if not self.problems[what]:
                print(f"simulation: could not {what}: {error!r}", file=sys.stderr)
            self.problems[what] += 1

    def _spike(self, _elapsed: float) -> None:
        self.stub.set_health(cpu_percent=self.cpu_spike_percent)

    def _sample_health(self, elapsed: float) -> None:
        health = self.stub.health()
        self.health.append((elapsed, health))
        self.on_health(health)

    def _sample_limit(self, elapsed: float) -> None:
        self.limits.append((elapsed, float(self.limit_in_force())))
