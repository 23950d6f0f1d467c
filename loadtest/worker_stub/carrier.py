"""The carrier behind the worker: a limit counted over a rolling window, the excess refused.

Vonage counts any rolling 1 s, Telnyx a rolling 5-s sum (at most 5x the limit in any 5 s);
docs/pacing.md. A refused call was placed: the worker accepted ``/dial`` and the carrier
answered SIP 503 afterwards, so only the worker knows, and reports it to the limiter with the
one command docs/dialer.md gives it: ``HINCRBY <prefix>:adaptive refused 1`` (`Refusals`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import redis

from ._background import RedisThread

DEFAULT_CARRIER_WINDOW: Final = 1.0
REFUSED_FIELD: Final = "refused"


@dataclass(frozen=True)
class CarrierLimit:
    """``limit`` calls a second, counted over ``window`` seconds (at most limit x window in
    any window); ``changes`` are (seconds after the first call, new limit), in order."""

    limit: int
    window: float = DEFAULT_CARRIER_WINDOW
    changes: tuple[tuple[float, int], ...] = ()

    def __post_init__(self) -> None:
        limits = [self.limit, *(limit for _, limit in self.changes)]
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in limits):
            raise ValueError(f"a carrier limit must be an int >= 1, got {limits}")
        if not self.window > 0:
            raise ValueError(f"the carrier window must be > 0 s, got {self.window!r}")
        moments = [at for at, _ in self.changes]
        if any(at < 0 for at in moments) or moments != sorted(moments):
            raise ValueError(f"carrier limit changes must be >= 0 s and in order: {moments}")

    def at(self, elapsed: float) -> int:
        """The limit in force ``elapsed`` seconds after the first call."""
        limit = self.limit
        for moment, changed in self.changes:
            if elapsed >= moment:
                limit = changed
        return limit


def parse_change(text: str) -> tuple[float, int]:
    """``"15:100"``: from 15 s after the first call, the limit is 100."""
    moment, sep, limit = text.partition(":")
    if not sep:
        raise ValueError(f"a carrier limit change is SECONDS:LIMIT, got {text!r}")
    return float(moment), int(limit)


class Carrier:
    """Accepts a call while its window holds fewer than limit x window accepted calls; a
    refused call does not count, as a carrier counts the calls it connects."""

    def __init__(self, limit: CarrierLimit) -> None:
        self.limit = limit
        self._accepted: deque[float] = deque()
        self._first: float | None = None
        self._lock = threading.Lock()
        self.refused = 0

    def offer(self, moment: float) -> bool:
        """Whether the carrier takes a call placed at ``moment`` (monotonic seconds)."""
        with self._lock:
            if self._first is None:
                self._first = moment
            window = self.limit.window
            while self._accepted and self._accepted[0] <= moment - window:
                self._accepted.popleft()
            if len(self._accepted) >= self.limit.at(moment - self._first) * window:
                self.refused += 1
                return False
            self._accepted.append(moment)
            return True


def adaptive_key(prefix: str, cluster: bool = False) -> str:
    """The limiter's adaptive hash (on a cluster the prefix is a hash tag)."""
    return f"{{{prefix}}}:adaptive" if cluster else f"{prefix}:adaptive"


class Refusals(RedisThread):
    """Reports refused calls as the worker does, from one thread: a refusal waits for no
    round trip, and those that pile up meanwhile go in one HINCRBY."""

    def __init__(self, client: Any, prefix: str, *, owns_client: bool = False) -> None:
        super().__init__(client, "stub-refusals", owns_client=owns_client)
        self._key = adaptive_key(prefix, isinstance(client, redis.RedisCluster))
        self._pending = 0
        self.reported = 0
        self._start()

    def refused(self) -> None:
        with self._wake:
            self._pending += 1
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if not self._pending:
                    return
                count, self._pending = self._pending, 0
            try:
                self._client.hincrby(self._key, REFUSED_FIELD, count)
                self.reported += count
            except redis.RedisError:
                # A refusal not reported only delays the decrease until the next one.
                self.errors += 1
