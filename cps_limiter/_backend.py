"""The one boundary between a limiter and its Redis.

What counts as "Redis gave no answer", the circuit breaker, the asyncio deadline and the
translation into `BackendUnavailable` live here and nowhere else; what a decision does when
Redis gives no answer (fail open or closed) is the limiter's ``_unavailable``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, TypeVar

import redis
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ._breaker import CircuitBreaker
from ._connect import is_cluster
from ._credentials import refused
from ._errors import BackendUnavailable, LateRequest, LimiterError
from ._wire import Spare

logger = logging.getLogger("cps_limiter")

BACKEND_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)
"""Everything that means "Redis did not give an answer". RedisClusterException is not a
RedisError: a cluster with every node down raises it."""
LOG_INTERVAL = 1.0
"""Seconds between two log lines of one kind from one limiter: an outage logs a line a
second, not one per decision."""
CIRCUIT_OPEN = "circuit open"
RETRY_WITHIN = 0.11
"""Seconds into a call that failed on its connection within which it is sent once more, on a
fresh connection: a pooled connection can die while idle (a NAT that dropped the flow, a Lambda
sandbox frozen between invocations) and fail its next command, reset or silent, though Redis is
well. Later than this, one more socket timeout (0.1 s) would break the 250-ms bound on a
decision, and the call fails as it would have."""
_CONNECTION_ERRORS: Final = (redis.ConnectionError, redis.TimeoutError, OSError)
_TIMEOUTS: Final = (redis.TimeoutError, TimeoutError)
_LATE: Final = "LATE"
"""How a script says that Redis ran the request after the deadline it carried."""
_POOL_EXHAUSTED: Final = "No connection available"
"""How redis-py's blocking pools say that no connection freed up in time: every connection is
busy, none died while idle, and sending again would only queue once more."""

T = TypeVar("T")


def _refused(error: BaseException) -> bool:
    """Whether ``error`` comes from a connection Redis's address refused (redis-py raises its
    own ConnectionError while handling the socket's)."""
    seen: BaseException | None = error
    for _ in range(4):  # the chain is short; a cycle or a long one is not this case
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Throttle:
    """Lets one log line through per `LOG_INTERVAL` and counts the ones it holds back; many
    threads fail at once during an outage, and one of them logs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged_at = -math.inf
        self._held = 0

    def due(self) -> int | None:
        """None when a line went out less than an interval ago (this one is counted), else
        how many were held back since that line."""
        with self._lock:
            now = time.monotonic()
            if now - self._logged_at < LOG_INTERVAL:
                self._held += 1
                return None
            held, self._held, self._logged_at = self._held, 0, now
            return held


class Backend:
    """A client behind a circuit breaker, with ``deadline`` seconds per asyncio call: every
    operation on the client goes through `call` or `acall`, which pass it the client."""

    unchecked_credentials: str | None = None
    """The user and host of a client whose credentials nothing has checked yet (an asyncio
    client, which cannot PING at start without blocking its loop): until Redis first answers,
    its refusing them is a `ConfigurationError`; afterwards it is an outage like any other (a
    password revoked while running)."""

    def __init__(self, client: Any, breaker: CircuitBreaker, *, deadline: float | None) -> None:
        self.client = client
        self._breaker = breaker
        self._deadline = deadline
        self._unexpected = Throttle()
        # After a failure, a call first checks that Redis answers (PING), so that a request
        # that takes capacity is not left on a stalled server, to run when it resumes long
        # after its caller gave up. A cluster client pings only a default node, which says
        # nothing of the node a key lives on, and a stand-in client may have no PING: both
        # send the request as it is.
        self._failing = False
        self._ping_first = not is_cluster(client) and callable(getattr(client, "ping", None))
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.spare = Spare()
        """The connection a decision keeps between calls (`_wire.Spare`)."""
        # A limiter made per request and dropped unclosed must not keep a connection out of
        # the pool it shares; the finalizer holds the spare alone, never the backend.
        finalizer = weakref.finalize(self, self.spare.dropped)
        finalizer.atexit = False

    def call(self, operation: Callable[..., T], *args: Any, on_spare: bool = False) -> T:
        """``operation(client, *args)``'s result, or `BackendUnavailable` from its error;
        `LateRequest` when Redis ran a script after the request's deadline.

        An operation ``on_spare`` (a decision's EVALSHA) sends on `spare`; any other first
        gives the spare back to the pool, where it takes its connection, so that a limiter
        and its caller share one."""
        if not on_spare:
            self.spare.give_back()
        with self as started:
            if self._failing:
                self.client.ping()
            try:
                return operation(self.client, *args)
            except _CONNECTION_ERRORS as error:
                self._retry_or_raise(error, started, queued_again=False)
                _drop_idle_connections(self.client)
                return operation(self.client, *args)

    async def acall(
        self, operation: Callable[..., Awaitable[T]], *args: Any, on_spare: bool = False
    ) -> T:
        """As `call`, for a coroutine, which also fails when the deadline passes."""
        if not on_spare:
            await self.spare.agive_back()
        with self as started:
            async with asyncio.timeout(self._deadline):
                if self._failing:
                    await self.client.ping()
                try:
                    return await operation(self.client, *args)
                except _CONNECTION_ERRORS as error:
                    self._retry_or_raise(error, started, queued_again=True)
                    await _adrop_idle_connections(self.client)
                    return await operation(self.client, *args)

    def __enter__(self) -> float:
        """One call's accounting, the same for `call` and `acall`: the breaker's say, the
        calls in flight, and what an error means; gives the moment the call started."""
        if not self._breaker.allow():
            raise BackendUnavailable(f"Redis unavailable ({CIRCUIT_OPEN})")
        with self._in_flight_lock:
            self._in_flight += 1
        return time.monotonic()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
        if error is None:
            self._answered()
        elif isinstance(error, Exception):
            raise self._failed(error) from error
        else:
            self._breaker.record_abandoned()

    def _retry_or_raise(self, error: Exception, started: float, *, queued_again: bool) -> None:
        if not self._may_retry(error, started, queued_again=queued_again):
            raise error

    def _may_retry(self, error: Exception, started: float, *, queued_again: bool) -> bool:
        """Whether a call that failed on its connection is sent once more, on a fresh one.
        A call that found every connection busy queues again only where a deadline of its
        own bounds it (``queued_again``: asyncio); a sync caller would wait twice over."""
        if time.monotonic() - started > RETRY_WITHIN:
            return False
        if str(error).startswith(_POOL_EXHAUSTED):
            return queued_again
        if _refused(error):
            # No connection died while idle: nothing listens there, and a fresh one would be
            # refused too (on a cluster, after one more rebuild of its slot map, which every
            # caller of a dead master runs at once).
            return False
        # A connection that died while idle fails the one call that meets it; a stalled Redis
        # times out every call in flight at once, and retrying them all would only double
        # the wait of a crowd.
        return not (isinstance(error, _TIMEOUTS) and self._in_flight > 1)

    def _answered(self) -> None:
        self._failing = False
        self._breaker.record_success()
        self.unchecked_credentials = None

    def _failed(self, error: Exception) -> LimiterError:
        if isinstance(error, ResponseError) and str(error).startswith(_LATE):
            # Redis answered: no outage, whatever the request's fate.
            self._answered()
            return LateRequest(str(error))
        self._failing = self._ping_first
        self._breaker.record_failure()
        place = self.unchecked_credentials
        if place is not None and isinstance(error, redis.AuthenticationError):
            return refused(place, error)
        if not isinstance(error, BACKEND_ERRORS):
            # A bug of the client library (or of the caller's operation) is no reason to let
            # an exception through a decision: it counts as Redis failing, with its traceback.
            held = self._unexpected.due()
            if held is not None:
                logger.error(
                    "Unexpected error talking to Redis, treated as Redis unavailable%s",
                    f" ({held} more since the last one)" if held else "",
                    exc_info=error,
                    extra={"cps_limiter_unexpected_error": True},
                )
        return BackendUnavailable(f"Redis unavailable ({type(error).__name__}: {error})")


def _drop_idle_connections(client: Any) -> None:
    """Close the pool's idle connections, so that the retry (and the calls after it) open fresh
    ones: the idle ones have likely died with the one that failed. A cluster client keeps a
    pool per node and replaces a failed node's connections by itself."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and _drops_idle_only(pool):
        pool.disconnect(inuse_connections=False)


async def _adrop_idle_connections(client: Any) -> None:
    pool = getattr(client, "connection_pool", None)
    if pool is not None and _drops_idle_only(pool):
        await pool.disconnect(inuse_connections=False)


def _drops_idle_only(pool: Any) -> bool:
    """Whether the pool can close its idle connections alone. redis-py's blocking pool could
    not in older releases, 5.1 among them: its ``disconnect`` closes every connection, those in
    use by other callers too. There the retry relies on the failed connection, which redis-py
    has closed and the pool hands out first, being opened afresh."""
    return "inuse_connections" in inspect.signature(pool.disconnect).parameters
