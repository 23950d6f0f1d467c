"""The limiter's own count: `CounterWatch` reads every per-second counter (``<base>:<unix ts>``,
the seed's ``cps:<unix_ts>``) that the run's decisions wrote, once its second is over."""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Final

COUNTER_POLL_SECONDS: Final = 0.2
# A counter's value is final once its second is over on the Redis clock (decisions write only
# the current second's or later ones), and it expires one second after that: a read every
# COUNTER_POLL_SECONDS catches each one while it is final and still there.
COUNTER_LIFETIME_AFTER_SECONDS: Final = 1


@dataclass
class CounterWatch:
    """Reads the counters of ended seconds about every `COUNTER_POLL_SECONDS`, and every
    counter left (up to `ahead` seconds past the end) once `stop` is set.

    `counters` holds each second's final count (seconds without a counter are left out);
    `stalls` counts polls that came too late to be sure of catching every counter."""

    client: Any
    base: str
    ahead: int
    """Seconds ahead of the clock a decision may write a counter for (its wait budget)."""
    stop: threading.Event = field(default_factory=threading.Event)
    counters: dict[int, int] = field(default_factory=dict)
    stalls: int = 0
    failures: int = 0
    _next: int | None = None

    def begin(self) -> None:
        """Mark the start, before the run's first decision: no earlier second is read."""
        self._next = self._now()

    def run(self) -> None:
        while not self.stop.wait(COUNTER_POLL_SECONDS):
            self._try(ahead=-1)
        # After the last decision no counter changes: the current one and those reserved
        # ahead are final too.
        self._try(ahead=self.ahead)

    def highest(self) -> int | None:
        """The highest count of any second, or None when the run wrote no counter."""
        return max(self.counters.values(), default=None)

    def _try(self, ahead: int) -> None:
        # Best effort, like the health agent: a Redis that is down must not end the run.
        try:
            now = self._now()
            self._read(now, now + ahead)
        except Exception as error:
            if not self.failures:
                print(f"simulation: could not read the cps counters: {error!r}", file=sys.stderr)
            self.failures += 1

    def _now(self) -> int:
        seconds, _ = self.client.time()
        return int(seconds)

    def _read(self, now: int, last: int) -> None:
        """Read the counters from the first second not read yet up to `last`."""
        first = now if self._next is None else self._next
        if first > last:
            return
        if first < now - COUNTER_LIFETIME_AFTER_SECONDS:
            self.stalls += 1
        seconds = list(range(first, last + 1))
        values = self.client.mget([f"{self.base}:{second}" for second in seconds])
        for second, value in zip(seconds, values, strict=True):
            if value is not None:
                self.counters[second] = int(value)
        self._next = last + 1


def ahead_of(max_wait: float) -> int:
    """Seconds past the current one that a decision waiting up to `max_wait` may reserve."""
    return math.ceil(max_wait) + 1
