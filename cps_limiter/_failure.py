"""What a decision is when Redis gives no answer: the fail-open policy, the only place it lives.

``open`` grants everything (the seed's fail-open), ``closed`` raises `BackendUnavailable`, and
``bounded`` grants at this process's share of the limit, spaced by a local pacer: a fleet of
processes that each know how many of them there are stays near the limit while Redis is down,
instead of multiplying it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Final

from ._backend import CIRCUIT_OPEN, Throttle
from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError
from ._strategies import PacedWindow
from ._validation import positive_int

logger = logging.getLogger("cps_limiter")

FAIL_OPEN: Final = "open"
FAIL_CLOSED: Final = "closed"
FAIL_BOUNDED: Final = "bounded"
FAIL_MODES: Final = (FAIL_OPEN, FAIL_CLOSED, FAIL_BOUNDED)
DEFAULT_PEERS: Final = 10
"""How many processes share the limit, for a ``bounded`` limiter that has not been told
(`set_peers`): conservative, since too many only slows an outage, too few overshoots."""


class LocalPacer:
    """Permits at most ``rate`` per second in this process, spaced ``1 / rate`` apart (a GCRA
    with a burst of 1 on the monotonic clock). Thread-safe."""

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self._interval = 1.0 / rate
        self._next = -math.inf

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._interval = 1.0 / rate

    def take(self, permits: int, need: int, max_wait: float) -> tuple[float, ...]:
        """The moments (seconds from now) of the permits granted: up to ``permits`` slots
        within ``max_wait``, or none when fewer than ``need`` fit."""
        with self._lock:
            now = time.monotonic()
            first = max(now, self._next)
            room = math.floor((now + max_wait - first) / self._interval + 1e-9) + 1
            count = min(permits, max(room, 0))
            if count < max(need, 1):
                return ()
            self._next = first + count * self._interval
        return tuple(first - now + k * self._interval for k in range(count))

    def hold_until(self, moment: float) -> None:
        """No slot before ``moment`` (monotonic)."""
        with self._lock:
            self._next = max(self._next, moment)

    def fits(self, permits: int, max_wait: float) -> bool:
        """Whether ``permits`` consecutive slots fit within ``max_wait`` when the first is now."""
        return math.floor(max_wait / self._interval + 1e-9) + 1 >= permits

    def wait(self) -> float:
        """Seconds until the next slot."""
        return max(self._next - time.monotonic(), 0.0)


class FailurePolicy:
    """The decision a limiter gives in place of Redis's, and the warning it logs."""

    def __init__(
        self, mode: str, capacity: int, interval: float, strategy_name: str, peers: int
    ) -> None:
        if mode not in FAIL_MODES:
            raise ConfigurationError(
                f"fail_mode must be one of {', '.join(map(repr, FAIL_MODES))}, got {mode!r}"
            )
        self.mode = mode
        self._limit = capacity
        self._interval = interval
        self._strategy_name = strategy_name
        self._peers = positive_int("peers", peers)
        self._pacer = LocalPacer(self.share)
        # A paced window's reset_after is when its last reserved slot has passed: how far ahead
        # of the clock the fleet's permits go on being spent when Redis stops answering.
        self._reserves = strategy_name == PacedWindow.name
        self._ahead = 0.0
        self._failing = False
        self._log = Throttle()

    @property
    def share(self) -> float:
        """Permits per second this process may grant while Redis is down (``bounded``)."""
        return self._limit / self._interval / self._peers

    def set_peers(self, peers: int) -> None:
        self._peers = positive_int("peers", peers)
        self._pacer.set_rate(self.share)

    def learned(self, decision: Decision) -> None:
        """Redis decided: a later outage shares the limit in force, and (for a paced window)
        starts from how far ahead of the clock Redis has handed out permits; see `decide`."""
        limit = decision.limit
        if limit != self._limit and limit > 0:
            self._limit = limit
            self._pacer.set_rate(self.share)
        if self._reserves:
            self._ahead = decision.reset_after
        self._failing = False

    def decide(
        self, permits: int, need: int, max_wait: float, acquiring: bool, error: BackendUnavailable
    ) -> Decision:
        if self.mode == FAIL_CLOSED:
            raise error
        self._warn(error)
        if self.mode == FAIL_BOUNDED and not self._failing:
            # The first failure of an outage: the permits the fleet took from Redis are still
            # being spent, up to about as far ahead of the outage's start as they were of the
            # last answer (the fleet kept taking them until then). The outage began between
            # that answer and now: local grants wait half of that reach, so that they neither
            # pile onto the fleet's permits nor leave a long silence after them.
            self._failing = True
            self._pacer.hold_until(time.monotonic() + self._ahead / 2)
        # A request for no permits takes no slot of the pacer: allowed, as Redis would.
        if self.mode == FAIL_OPEN or not acquiring or permits == 0:
            granted = permits if acquiring else 0
            return Decision(
                allowed=True,
                granted=granted,
                limit=self._limit,
                remaining=max(self._limit - granted, 0),
                retry_after=0.0,
                reset_after=0.0,
                fail_open=True,
            )
        moments = self._pacer.take(permits, need, max_wait)
        if not moments:
            wait = self._pacer.wait()
            # As Redis says it: permits spaced wider than max_wait are never granted together.
            retry = wait if self._pacer.fits(need, max_wait) else math.inf
            return Decision(False, 0, self._limit, 0, retry, wait, fail_open=True)
        first = moments[0]
        return Decision(
            allowed=True,
            granted=len(moments),
            limit=self._limit,
            remaining=0,
            retry_after=0.0,
            reset_after=self._pacer.wait(),
            fail_open=True,
            waited=first,
            schedule=tuple(m - first for m in moments) if len(moments) > 1 else (),
        )

    def _warn(self, error: BackendUnavailable) -> None:
        held = self._log.due()
        if held is None:
            return
        cause = error.__cause__
        bound = f", pacing at {self.share:g}/s here" if self.mode == FAIL_BOUNDED else ""
        logger.warning(
            "Redis unavailable, failing open%s: %s%s",
            bound,
            CIRCUIT_OPEN if cause is None else f"{type(cause).__name__}: {cause}",
            f" ({held} more since the last warning)" if held else "",
            extra={"cps_limiter_fail_open": True, "cps_limiter_strategy": self._strategy_name},
        )
