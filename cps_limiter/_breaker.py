"""A circuit breaker: while Redis is down, a decision costs microseconds, not a timeout."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ._validation import positive_int, positive_number

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RECOVERY_TIME = 0.5


@dataclass
class CircuitBreaker:
    """Closed until ``failure_threshold`` failures in a row; then open for ``recovery_time``
    seconds, after which one caller at a time probes Redis (half-open) until one succeeds.

    Thread-safe; the lock is held only to read and write three fields, never across I/O.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    recovery_time: float = DEFAULT_RECOVERY_TIME
    _failures: int = field(default=0, init=False)
    _open_until: float = field(default=0.0, init=False)
    _probing: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        positive_int("failure_threshold", self.failure_threshold)
        positive_number("recovery_time", self.recovery_time)

    def allow(self) -> bool:
        """Whether a call may go to Redis now."""
        if self._failures < self.failure_threshold:
            return True
        with self._lock:
            if self._failures < self.failure_threshold:
                return True
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def record_success(self) -> None:
        if self._failures or self._probing:
            with self._lock:
                self._failures = 0
                self._probing = False

    def record_abandoned(self) -> None:
        """A call that ended with neither an answer nor a failure (it was cancelled): the
        probe it may have been is free again, and nothing is counted."""
        if self._probing:
            with self._lock:
                self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._failures >= self.failure_threshold:
                self._open_until = time.monotonic() + self.recovery_time
