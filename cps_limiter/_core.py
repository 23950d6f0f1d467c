"""What `Limiter` and `AsyncLimiter` share: everything but the call that talks to Redis.

A request's script call is built here (and cached by its shape), a denial Redis gave is kept
here, a reply becomes a Decision here, and here is the fail-open policy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ._adaptive import (
    OFF_ARGUMENTS,
    AdaptivePolicy,
    adaptive_key,
    refused_command,
    refused_count,
)
from ._backend import Backend
from ._breaker import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RECOVERY_TIME, CircuitBreaker
from ._clock import HostClock
from ._connect import is_cluster
from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError, LateRequest
from ._failure import DEFAULT_PEERS, FAIL_OPEN, FailurePolicy
from ._scripts import ACQUIRE, parse_reply, strategy_source
from ._strategies import Strategy, limit_base
from ._validation import key_part, non_negative_int, non_negative_number
from ._wire import direct_pool

logger = logging.getLogger("cps_limiter")

DEFAULT_PREFIX = "cps"
DENY_CACHE_SECONDS = 1.0
"""The longest a denial is served from the local cache: a reset, a restart or a new limit
elsewhere is noticed within it."""
REQUEST_LIFETIME_MS = 1000
"""How long after it was sent Redis may still run a request: far beyond the 250 ms a caller
waits, so that a host clock within a second of Redis's never has a live request refused."""
MAX_CACHED_REQUESTS = 4096
"""Prepared script calls a limiter keeps (one per scope, permits, partial and mode); the cache
starts over when full, so a limiter with unbounded scopes stays bounded in memory."""

_LIMITER_OPTIONS = frozenset(
    {
        "prefix",
        "fail_mode",
        "failure_threshold",
        "recovery_time",
        "decision_timeout",
        "deny_cache",
        "adaptive",
        "peers",
    }
)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``from_url``'s options: the limiter's, and the rest, which go to the client."""
    mine = {k: v for k, v in options.items() if k in _LIMITER_OPTIONS}
    client = {k: v for k, v in options.items() if k not in _LIMITER_OPTIONS}
    return mine, client


class Request(NamedTuple):
    """One request, made on every decision, a cached denial's included: a named tuple, since a
    frozen dataclass sets each field through ``object.__setattr__`` and costs several times
    as much to build."""

    base: str
    head: tuple[str | int, ...]
    tail: tuple[str, ...]
    permits: int
    need: int
    """The fewest permits that would satisfy the request (1 when partial)."""
    max_wait: float
    mode: str

    def evalsha(self, clock_offset_ms: int) -> tuple[str | int, ...]:
        """The arguments of EVALSHA: sha, number of keys, keys, then the script's ARGV. Built
        when the request is sent, so that a denial served from the cache never builds them;
        ``clock_offset_ms`` puts the deadline on Redis's clock (`_clock.HostClock`)."""
        # The caller gives up on a request long before this; a server that stalled and resumes
        # refuses it rather than grant capacity nobody will use.
        deadline = (
            str(time.time_ns() // 1_000_000 + clock_offset_ms + REQUEST_LIFETIME_MS)
            if self.mode == ACQUIRE
            else "0"
        )
        return (*self.head, repr(self.max_wait), self.mode, deadline, *self.tail)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a request's script call is for one scope, permits, partial and mode: everything but
    ``max_wait``, which callers such as the dialer vary on every call."""

    base: str
    head: tuple[str | int, ...]
    """EVALSHA's sha, number of keys, keys, and the ARGV before max_wait."""
    tail: tuple[str, ...]
    """The ARGV after max_wait, the mode and the deadline: the adaptive prelude's."""
    need: int


@dataclass(frozen=True, slots=True)
class _Denial:
    at: float
    """When Redis denied (monotonic clock)."""
    until: float
    """When the cache stops serving the denial."""
    need: int
    decision: Decision


class LimiterCore:
    def __init__(
        self,
        client: Any,
        strategy: Strategy,
        *,
        prefix: str = DEFAULT_PREFIX,
        fail_mode: str = FAIL_OPEN,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        recovery_time: float = DEFAULT_RECOVERY_TIME,
        decision_timeout: float | None = None,
        deny_cache: bool = True,
        adaptive: AdaptivePolicy | None = None,
        peers: int = DEFAULT_PEERS,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                "strategy must be FixedWindow, SlidingWindow or TokenBucket, "
                f"not {type(strategy).__name__}"
            )
        if adaptive is not None and not isinstance(adaptive, AdaptivePolicy):
            raise ConfigurationError(
                f"adaptive must be an AdaptivePolicy or None, not {type(adaptive).__name__}"
            )
        self._client = client
        self._strategy = strategy
        self._prefix = key_part("prefix", prefix)
        self._failure = FailurePolicy(
            fail_mode, strategy.capacity, strategy.interval, strategy.name, peers
        )
        breaker = CircuitBreaker(failure_threshold, recovery_time)
        self._backend = Backend(client, breaker, deadline=self._deadline(decision_timeout))
        self._pool = direct_pool(client)
        self._clock = HostClock()
        self._cluster = is_cluster(client)
        # EVALSHA is called directly, not through redis-py's Script, whose per-call work
        # (an import, tuple copies, a Pipeline check) is a noticeable part of a decision.
        self._source = strategy_source(strategy.script)
        # SHA1 is what Redis names scripts by, not a security measure.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()
        self._parameters = strategy.parameters()
        self._shapes: dict[tuple[object, ...], _Shape] = {}
        self._adaptive = adaptive
        self._adaptive_arguments = OFF_ARGUMENTS if adaptive is None else adaptive.arguments()
        self._denials: dict[str, _Denial] | None = {} if deny_cache else None
        self._owns_client = False

    @classmethod
    def _deadline(cls, decision_timeout: float | None) -> float | None:
        """The seconds one asyncio call may take, from the ``decision_timeout`` option."""
        raise NotImplementedError

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
        return self._failure.mode

    @property
    def adaptive(self) -> AdaptivePolicy | None:
        return self._adaptive

    def key_base(self, scope: str | None = None) -> str:
        """The name all keys of ``scope`` start with, as `acquire_all`'s rules name them: on a
        cluster the prefix is a hash tag, so that the keys of one decision share a slot."""
        checked = None if scope is None else key_part("scope", scope)
        return limit_base(self._prefix, checked, self._cluster)

    def refused_command(self, refused: int, scope: str | None = None) -> tuple[str, str, str, int]:
        """`report_refused` as a command for a pipeline of the caller's, so that reporting
        costs no round trip of its own: ``("HINCRBY", "<prefix>:adaptive", "refused", n)``."""
        return refused_command(self.key_base(scope), refused_count(refused))

    def _request(
        self, scope: str | None, permits: int, partial: bool, max_wait: float, mode: str
    ) -> Request:
        """The script call; its shape is built once per scope and request shape, then reused,
        since building keys and arguments is a fair share of a decision's time outside Redis."""
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
        return Request(shape.base, shape.head, shape.tail, permits, shape.need, max_wait, mode)

    def _shape(self, scope: str | None, permits: int, partial: bool, mode: str) -> _Shape:
        base = self.key_base(scope)
        keys = self._strategy.keys(base)
        if self._adaptive is not None:
            keys.append(adaptive_key(base))
        head = (
            self._sha,
            len(keys),
            *keys,
            *self._parameters,
            str(permits),
            "1" if partial else "0",
        )
        need = min(permits, 1) if partial else permits
        return _Shape(base, head, tuple(self._adaptive_arguments), need)

    def _cached_denial(self, request: Request) -> Decision | None:
        """A denial that Redis gave for this key and is still true: the key is exhausted until
        its retry time, so asking again would only cost a round trip. Never grants."""
        if not self._denials or request.mode != ACQUIRE or request.need == 0:
            return None
        denial = self._denials.get(request.base)
        # Only the same need: a denial for 1 says when 1 is free, not when 5 are.
        if denial is None or request.need != denial.need:
            return None
        now = time.monotonic()
        denied = denial.decision
        left = denied.retry_after - (now - denial.at)
        if now >= denial.until or left <= request.max_wait:
            return None
        return Decision(
            allowed=False,
            granted=0,
            limit=denied.limit,
            remaining=denied.remaining,
            retry_after=left,
            reset_after=max(denied.reset_after - (now - denial.at), 0.0),
        )

    def _decided(self, request: Request, reply: Any) -> Decision:
        decision, wait = parse_reply(reply)
        self._failure.learned(decision)
        if self._denials is not None and request.mode == ACQUIRE:
            if decision.allowed:
                if self._denials:
                    self._denials.pop(request.base, None)
            elif decision.retry_after > 0 and math.isfinite(decision.retry_after):
                now = time.monotonic()
                until = now + min(decision.retry_after, DENY_CACHE_SECONDS)
                self._denials[request.base] = _Denial(now, until, request.need, decision)
        return replace(decision, waited=wait) if wait else decision

    @staticmethod
    def _not_the_clock(late: LateRequest) -> BackendUnavailable:
        """A request Redis ran late though the host's clock agrees with it: Redis stalled."""
        error = BackendUnavailable(f"Redis unavailable ({late})")
        error.__cause__ = late
        return error

    def _unavailable(self, request: Request, error: BackendUnavailable) -> Decision:
        return self._failure.decide(
            request.permits, request.need, request.max_wait, request.mode == ACQUIRE, error
        )

    def set_peers(self, peers: int) -> None:
        """How many processes share the limit: with ``fail_mode="bounded"``, this one grants
        at most its share (the limit in force divided by ``peers``) while Redis is down."""
        self._failure.set_peers(peers)

    def _forget_denials(self, scope: str | None) -> None:
        if self._denials is not None:
            self._denials.pop(self.key_base(scope), None)
