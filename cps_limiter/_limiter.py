"""Limiter and AsyncLimiter: one executor that runs a strategy's script and applies the policy.

Both classes share everything in `_LimiterCore`; they differ only in the call that talks to
Redis and in how they sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ._adaptive import (
    OFF_ARGUMENTS,
    AdaptivePolicy,
    HealthReport,
    cap_key,
    clear_cap,
    health_key,
    read_cap,
    read_health,
    set_cap,
    write_health,
)
from ._breaker import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RECOVERY_TIME, CircuitBreaker
from ._connect import async_client, is_cluster, sync_client
from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError
from ._scripts import ACQUIRE, PEEK, RESET, parse_reply, strategy_source
from ._strategies import Strategy
from ._telemetry import Observation
from ._validation import key_part, non_negative_int, non_negative_number, positive_number

logger = logging.getLogger("cps_limiter")

DEFAULT_PREFIX = "cps"
FAIL_OPEN = "open"
FAIL_CLOSED = "closed"
DEFAULT_DECISION_TIMEOUT = 0.2
"""Seconds an AsyncLimiter gives one decision before failing it (sync clients rely on their
socket timeouts, which from_url sets to 0.1 s)."""
MEMORY_DECISION_TIMEOUT = 5.0
"""The AsyncLimiter's deadline on memory://, where nothing can stall but a busy machine."""
DENY_CACHE_SECONDS = 1.0
"""The longest a denial is served from the local cache: a reset, a restart or a new limit
elsewhere is noticed within it."""
WARNING_INTERVAL = 1.0
"""Seconds between two fail-open warnings of one limiter: an outage logs a line a second, not
one per decision."""
MAX_CACHED_REQUESTS = 4096
"""Prepared script calls a limiter keeps (one per scope, permits, partial and mode); the cache
starts over when full, so a limiter with unbounded scopes stays bounded in memory."""

# Everything that means "Redis did not give an answer"; translated here and nowhere else.
# RedisClusterException is not a RedisError: a cluster with every node down raises it.
_BACKEND_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
_LIMITER_OPTIONS = frozenset(
    {
        "prefix",
        "fail_mode",
        "failure_threshold",
        "recovery_time",
        "decision_timeout",
        "deny_cache",
        "adaptive",
    }
)


@dataclass(frozen=True, slots=True)
class _Request:
    base: str
    evalsha: tuple[str | int, ...]
    """The arguments of EVALSHA: sha, number of keys, keys, then the script's ARGV."""
    permits: int
    need: int
    """The fewest permits that would satisfy the request (1 when partial)."""
    max_wait: float
    mode: str


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a request's script call is for one scope, permits, partial and mode: everything but
    ``max_wait``, which callers such as the dialer vary on every call."""

    base: str
    head: tuple[str | int, ...]
    """EVALSHA's sha, number of keys, keys, and the ARGV before max_wait."""
    tail: tuple[str, ...]
    """The ARGV after max_wait."""
    need: int


@dataclass(frozen=True, slots=True)
class _Denial:
    until: float
    need: int
    decision: Decision


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    mine = {k: v for k, v in options.items() if k in _LIMITER_OPTIONS}
    client = {k: v for k, v in options.items() if k not in _LIMITER_OPTIONS}
    return mine, client


class _LimiterCore:
    def __init__(
        self,
        client: Any,
        strategy: Strategy,
        *,
        prefix: str = DEFAULT_PREFIX,
        fail_mode: str = FAIL_OPEN,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        recovery_time: float = DEFAULT_RECOVERY_TIME,
        decision_timeout: float = DEFAULT_DECISION_TIMEOUT,
        deny_cache: bool = True,
        adaptive: AdaptivePolicy | None = None,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                "strategy must be FixedWindow, SlidingWindow or TokenBucket, "
                f"not {type(strategy).__name__}"
            )
        if fail_mode not in (FAIL_OPEN, FAIL_CLOSED):
            raise ConfigurationError(f"fail_mode must be 'open' or 'closed', got {fail_mode!r}")
        self._client = client
        self._strategy = strategy
        self._prefix = key_part("prefix", prefix)
        self._fail_mode = fail_mode
        self._decision_timeout = positive_number("decision_timeout", decision_timeout)
        self._breaker = CircuitBreaker(failure_threshold, recovery_time)
        self._cluster = is_cluster(client)
        # EVALSHA is called directly, not through redis-py's Script, whose per-call work
        # (an import, tuple copies, a Pipeline check) cost about 5% of a decision.
        self._source = strategy_source(strategy.script)
        # SHA1 is what Redis names scripts by, not a security measure.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()
        self._parameters = strategy.parameters()
        self._shapes: dict[tuple[object, ...], _Shape] = {}
        if adaptive is not None and not isinstance(adaptive, AdaptivePolicy):
            raise ConfigurationError(
                f"adaptive must be an AdaptivePolicy or None, not {type(adaptive).__name__}"
            )
        self._adaptive = adaptive
        self._adaptive_arguments = OFF_ARGUMENTS if adaptive is None else adaptive.arguments()
        self._denials: dict[str, _Denial] | None = {} if deny_cache else None
        self._owns_client = False
        self._warned_at = -math.inf
        # Many threads fail open at once during an outage: one of them warns.
        self._warning_lock = threading.Lock()
        self._unwarned = 0

    @property
    def client(self) -> Any:
        """The Redis client, for callers that keep their own data beside the limiter's."""
        return self._client

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def fail_mode(self) -> str:
        return self._fail_mode

    @property
    def adaptive(self) -> AdaptivePolicy | None:
        return self._adaptive

    def key_base(self, scope: str | None = None) -> str:
        """The name all keys of ``scope`` start with; a hash tag on a cluster, so that the keys
        of one decision share a slot."""
        name = self._prefix if scope is None else f"{self._prefix}:{key_part('scope', scope)}"
        return f"{{{name}}}" if self._cluster else name

    def _request(
        self, scope: str | None, permits: int, partial: bool, max_wait: float, mode: str
    ) -> _Request:
        """The script call; its shape is built once per scope and request shape, then reused,
        since building keys and arguments is a fifth of a decision's time outside Redis."""
        non_negative_int("permits", permits)
        max_wait = non_negative_number("max_wait", max_wait)
        # Only validated scopes are cached, and no str equals a non-str: a bad scope of any
        # type misses the cache and is refused by key_base.
        cacheable = scope is None or type(scope) is str
        signature = (scope, permits, bool(partial), mode)
        shape = self._shapes.get(signature) if cacheable else None
        if shape is None:
            shape = self._shape(scope, permits, partial, mode)
            if len(self._shapes) >= MAX_CACHED_REQUESTS:
                self._shapes.clear()
            self._shapes[signature] = shape
        evalsha = (*shape.head, repr(max_wait), *shape.tail)
        return _Request(shape.base, evalsha, permits, shape.need, max_wait, mode)

    def _shape(self, scope: str | None, permits: int, partial: bool, mode: str) -> _Shape:
        base = self.key_base(scope)
        keys = self._strategy.keys(base)
        if self._adaptive is not None:
            keys += [cap_key(base), health_key(base)]
        head = (
            self._sha,
            len(keys),
            *keys,
            *self._parameters,
            str(permits),
            "1" if partial else "0",
        )
        need = min(permits, 1) if partial else permits
        return _Shape(base, head, (mode, *self._adaptive_arguments), need)

    def _cached_denial(self, request: _Request) -> Decision | None:
        """A denial that Redis gave for this key and is still true: the key is exhausted until
        its retry time, so asking again would only cost a round trip. Never grants."""
        if not self._denials or request.mode != ACQUIRE or request.need == 0:
            return None
        denial = self._denials.get(request.base)
        if denial is None or request.need < denial.need:
            return None
        left = denial.until - time.monotonic()
        if left <= request.max_wait:
            return None
        return Decision(
            allowed=False,
            granted=0,
            limit=denial.decision.limit,
            remaining=denial.decision.remaining,
            retry_after=left,
            reset_after=max(denial.decision.reset_after - (denial.decision.retry_after - left), 0),
        )

    def _decided(self, request: _Request, reply: Any) -> Decision:
        self._breaker.record_success()
        decision, wait = parse_reply(reply)
        if self._denials is not None and request.mode == ACQUIRE:
            if decision.allowed:
                if self._denials:
                    self._denials.pop(request.base, None)
            elif decision.retry_after > 0 and math.isfinite(decision.retry_after):
                until = time.monotonic() + min(decision.retry_after, DENY_CACHE_SECONDS)
                self._denials[request.base] = _Denial(until, request.need, decision)
        if wait:
            return Decision(
                decision.allowed,
                decision.granted,
                decision.limit,
                decision.remaining,
                decision.retry_after,
                decision.reset_after,
                waited=wait,
            )
        return decision

    def _unavailable(self, request: _Request, error: BaseException | None) -> Decision:
        """The fail-open policy, the only place it lives."""
        if error is not None:
            self._breaker.record_failure()
        reason = "circuit open" if error is None else f"{type(error).__name__}: {error}"
        if self._fail_mode == FAIL_CLOSED:
            raise BackendUnavailable(f"Redis unavailable ({reason})") from error
        self._warn(reason)
        granted = request.permits if request.mode == ACQUIRE else 0
        capacity = self._strategy.capacity
        return Decision(
            allowed=True,
            granted=granted,
            limit=capacity,
            remaining=max(capacity - granted, 0),
            retry_after=0.0,
            reset_after=0.0,
            fail_open=True,
        )

    def _warn(self, reason: str) -> None:
        with self._warning_lock:
            now = time.monotonic()
            if now - self._warned_at < WARNING_INTERVAL:
                self._unwarned += 1
                return
            more = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
            self._warned_at = now
            self._unwarned = 0
        logger.warning(
            "Redis unavailable, failing open: %s%s",
            reason,
            more,
            extra={"cps_limiter_fail_open": True, "cps_limiter_strategy": self._strategy.name},
        )

    def _forget_denials(self, scope: str | None) -> None:
        if self._denials is not None:
            self._denials.pop(self.key_base(scope), None)


class Limiter(_LimiterCore):
    """A rate limiter on a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client.

    Every decision is one atomic script on the Redis server clock. With ``fail_mode="open"``
    (the default) a Redis that errs or times out yields an allowed Decision with
    ``fail_open=True``; with ``"closed"`` it raises `BackendUnavailable`.
    """

    @classmethod
    def from_url(cls, url: str, strategy: Strategy, **options: Any) -> Self:
        """A limiter on ``redis://``, ``rediss://``, ``unix://`` or ``memory://`` (in-process).

        ``?cluster=true`` in a redis(s) URL connects to a Redis Cluster. Options other than
        the limiter's go to the client (``ssl_ca_certs``, ``socket_timeout``, ...).
        """
        mine, client_options = _split_options(options)
        limiter = cls(sync_client(url, **client_options), strategy, **mine)
        limiter._owns_client = True
        return limiter

    def acquire(
        self,
        scope: str | None = None,
        permits: int = 1,
        *,
        partial: bool = False,
        max_wait: float = 0.0,
    ) -> Decision:
        """Take ``permits`` (all or none; as many as are free with ``partial=True``), waiting
        up to ``max_wait`` seconds for them."""
        request = self._request(scope, permits, partial, max_wait, ACQUIRE)
        with Observation(self._strategy.name, permits) as seen:
            seen.decision = decision = self._cached_denial(request) or self._call(request)
        if decision.waited:
            time.sleep(decision.waited)
        return decision

    def peek(self, scope: str | None = None) -> Decision:
        """The state now, as a decision for one permit that consumes nothing."""
        return self._call(self._request(scope, 0, False, 0.0, PEEK))

    def reset(self, scope: str | None = None) -> None:
        """Forget every grant of ``scope``."""
        self._forget_denials(scope)
        self._call(self._request(scope, 0, False, 0.0, RESET))

    def report_health(
        self, cpu: float, answer_rate: float | None = None, scope: str | None = None
    ) -> None:
        """Write the dialing host's health, which an ``adaptive`` limiter reads."""
        write_health(self._client, self.key_base(scope), cpu, answer_rate)

    def health(self, scope: str | None = None) -> HealthReport:
        return read_health(self._client, self.key_base(scope))

    def set_cap(self, limit: int, ttl: float, scope: str | None = None) -> None:
        """Replace the base limit with ``limit`` for ``ttl`` seconds (an ``adaptive`` limiter)."""
        set_cap(self._client, self.key_base(scope), limit, ttl)

    def clear_cap(self, scope: str | None = None) -> None:
        clear_cap(self._client, self.key_base(scope))

    def cap(self, scope: str | None = None) -> tuple[int | None, float | None]:
        """The operator's cap and the seconds it has left, or ``(None, None)``."""
        return read_cap(self._client, self.key_base(scope))

    def _call(self, request: _Request) -> Decision:
        if not self._breaker.allow():
            return self._unavailable(request, None)
        try:
            try:
                reply = self._client.evalsha(*request.evalsha)
            except NoScriptError:
                # A restarted or flushed server (or a new cluster node) has lost the script.
                self._client.script_load(self._source)
                reply = self._client.evalsha(*request.evalsha)
        except _BACKEND_ERRORS as exc:
            return self._unavailable(request, exc)
        return self._decided(request, reply)

    def close(self) -> None:
        """Close the client if this limiter made it (from_url)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncLimiter(_LimiterCore):
    """`Limiter` for asyncio, on ``redis.asyncio`` clients; methods are coroutines.

    Each decision also has a deadline of ``decision_timeout`` seconds (0.2 by default).
    """

    @classmethod
    def from_url(cls, url: str, strategy: Strategy, **options: Any) -> Self:
        """As `Limiter.from_url`, with an asyncio client."""
        mine, client_options = _split_options(options)
        if isinstance(url, str) and url.startswith("memory:"):
            # The deadline guards calls over a network; an in-process server has none, and the
            # sync memory:// client has no timeout either.
            mine.setdefault("decision_timeout", MEMORY_DECISION_TIMEOUT)
        limiter = cls(async_client(url, **client_options), strategy, **mine)
        limiter._owns_client = True
        return limiter

    async def acquire(
        self,
        scope: str | None = None,
        permits: int = 1,
        *,
        partial: bool = False,
        max_wait: float = 0.0,
    ) -> Decision:
        """As `Limiter.acquire`."""
        request = self._request(scope, permits, partial, max_wait, ACQUIRE)
        with Observation(self._strategy.name, permits) as seen:
            seen.decision = decision = self._cached_denial(request) or await self._call(request)
        if decision.waited:
            await asyncio.sleep(decision.waited)
        return decision

    async def peek(self, scope: str | None = None) -> Decision:
        """As `Limiter.peek`."""
        return await self._call(self._request(scope, 0, False, 0.0, PEEK))

    async def reset(self, scope: str | None = None) -> None:
        """As `Limiter.reset`."""
        self._forget_denials(scope)
        await self._call(self._request(scope, 0, False, 0.0, RESET))

    async def _call(self, request: _Request) -> Decision:
        if not self._breaker.allow():
            return self._unavailable(request, None)
        try:
            async with asyncio.timeout(self._decision_timeout):
                try:
                    reply = await self._client.evalsha(*request.evalsha)
                except NoScriptError:
                    await self._client.script_load(self._source)
                    reply = await self._client.evalsha(*request.evalsha)
        except _BACKEND_ERRORS as exc:
            return self._unavailable(request, exc)
        return self._decided(request, reply)

    async def aclose(self) -> None:
        """Close the client if this limiter made it (from_url)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
