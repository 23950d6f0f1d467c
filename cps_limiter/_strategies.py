"""Strategies: what a limit is and how its script is called. No I/O here."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ._validation import fraction, positive_int, positive_number

DEFAULT_WINDOW = 1
DEFAULT_PERIOD = 1.0


def limit_base(prefix: str, scope: str | None, cluster: bool) -> str:
    """The name every key of one limit starts with, whichever call takes its permits
    (``acquire`` or ``acquire_all``). On a cluster the prefix is the hash tag: the rules of one
    decision may each have a scope and must share a slot, so a scope's keys share it too."""
    name = f"{{{prefix}}}" if cluster else prefix
    return name if scope is None else f"{name}:{scope}"


class Strategy(ABC):
    """A rate-limiting algorithm: its Lua script, the keys it touches and its parameters."""

    name: ClassVar[str]
    script: ClassVar[str]
    """File name of the Lua script in the package's ``lua`` folder."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """The ``limit`` its decisions report when Redis has not said otherwise: the most
        permits that could be granted at once."""

    @property
    @abstractmethod
    def interval(self) -> float:
        """The seconds over which `capacity` permits are granted."""

    @abstractmethod
    def keys(self, base: str) -> list[str]:
        """The KEYS of the script for one limit named ``base`` (prefix, scope, hash tag)."""

    @abstractmethod
    def parameters(self) -> list[str]:
        """The leading ARGV of the script; the limiter appends the request."""


@dataclass(frozen=True, slots=True)
class FixedWindow(Strategy):
    """At most ``limit`` permits per window of ``window`` whole seconds, aligned to the clock.

    The counter of the window that began at unix second ``t`` is ``{prefix}:{t}`` (with a scope,
    ``{prefix}:{scope}:{t}``). Cheapest of the three, but it lets up to twice the limit through
    across a window boundary.
    """

    limit: int
    window: int = DEFAULT_WINDOW

    name: ClassVar[str] = "fixed_window"
    script: ClassVar[str] = "fixed_window.lua"

    def __post_init__(self) -> None:
        positive_int("limit", self.limit)
        positive_int("window", self.window)

    @property
    def capacity(self) -> int:
        return self.limit

    @property
    def interval(self) -> float:
        return float(self.window)

    def keys(self, base: str) -> list[str]:
        return [base]

    def parameters(self) -> list[str]:
        return [str(self.limit), str(self.window)]


@dataclass(frozen=True, slots=True)
class PacedWindow(Strategy):
    """The fixed window's counters, ``{prefix}:{t}``, with the permits spaced evenly in time.

    Consecutive permits are at least ``window * (1 + headroom) / limit`` seconds apart on the
    Redis clock and no counter ever exceeds the limit in force, so no interval of ``window``
    seconds holds more than ``limit`` permits, not even across a window boundary. A grant
    carries the moment each permit may be used (`Decision.waited` for the first,
    `Decision.schedule` for the others): one call reserves a run of slots and the caller
    spends them at their moments, instead of all at once.

    ``headroom`` widens the spacing beyond ``window / limit``: the moments are exact on the
    Redis clock, and the headroom absorbs the jitter between a moment and the use of the
    permit (a network hop, a scheduler), at the cost of that fraction of the throughput.
    Like a token bucket with a burst of 1, a request for several permits needs a ``max_wait``
    that covers their spacing.
    """

    limit: int
    window: int = DEFAULT_WINDOW
    headroom: float = 0.0

    name: ClassVar[str] = "paced_window"
    script: ClassVar[str] = "paced_window.lua"

    def __post_init__(self) -> None:
        positive_int("limit", self.limit)
        positive_int("window", self.window)
        fraction("headroom", self.headroom)

    @property
    def capacity(self) -> int:
        return self.limit

    @property
    def interval(self) -> float:
        return float(self.window)

    def keys(self, base: str) -> list[str]:
        return [base, f"{base}:pace"]

    def parameters(self) -> list[str]:
        return [str(self.limit), str(self.window), repr(float(self.headroom))]


@dataclass(frozen=True, slots=True)
class SlidingWindow(Strategy):
    """Exactly: no interval of ``window`` seconds ever holds more than ``limit`` permits.

    Keeps a log of grant times (memory O(limit) per key).
    """

    limit: int
    window: float = 1.0

    name: ClassVar[str] = "sliding_window"
    script: ClassVar[str] = "sliding_window.lua"

    def __post_init__(self) -> None:
        positive_int("limit", self.limit)
        positive_number("window", self.window)

    @property
    def capacity(self) -> int:
        return self.limit

    @property
    def interval(self) -> float:
        return float(self.window)

    def keys(self, base: str) -> list[str]:
        return [f"{base}:log", f"{base}:seq"]

    def parameters(self) -> list[str]:
        return [str(self.limit), repr(float(self.window))]


@dataclass(frozen=True, slots=True)
class TokenBucket(Strategy):
    """GCRA: ``rate`` permits per ``period`` seconds, bursts of up to ``burst`` permits.

    Same semantics as go-redis/redis_rate and redis-cell; ``burst`` defaults to ``rate``
    (rounded up). Stores one number per key.
    """

    rate: float
    burst: int | None = None
    period: float = DEFAULT_PERIOD

    name: ClassVar[str] = "token_bucket"
    script: ClassVar[str] = "token_bucket.lua"

    def __post_init__(self) -> None:
        positive_number("rate", self.rate)
        positive_number("period", self.period)
        if self.burst is None:
            object.__setattr__(self, "burst", max(1, math.ceil(self.rate)))
        else:
            positive_int("burst", self.burst)

    @property
    def capacity(self) -> int:
        """The burst: the most permits granted at once, as redis-cell and the RateLimit-Limit
        header give a bucket's capacity."""
        return self.burst or 1

    @property
    def interval(self) -> float:
        """The seconds the bucket takes to grant its burst at its rate."""
        return self.period * self.capacity / self.rate

    def keys(self, base: str) -> list[str]:
        return [f"{base}:tat"]

    def parameters(self) -> list[str]:
        return [repr(float(self.rate)), str(self.burst), repr(float(self.period))]
