"""Several limits in one decision: the rules (value objects), their script call and its reply.

No I/O here: `_multi` runs the call on a sync or an asyncio client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ._decision import Decision
from ._errors import ConfigurationError
from ._scripts import _schedule
from ._strategies import (
    FixedWindow,
    PacedWindow,
    SlidingWindow,
    Strategy,
    TokenBucket,
    limit_base,
)
from ._validation import (
    key_part,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
)

RULES_SCRIPT = "rules.lua"
LEASES_SCRIPT = "leases.lua"
LEASES_SUFFIX = "leases"
MIN_LEASE_TTL = 0.001
"""The shortest lease: one millisecond, the resolution of a lease's expiry on the Redis clock."""
MAX_LEASE_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` leases held at once; each lives ``ttl`` seconds on the Redis clock after
    its permit's moment unless freed first, so a crashed holder's lease frees itself.

    The leases of scope ``s`` are the ZSET ``{prefix}:{s}:leases`` (member: the lease id, score:
    its expiry in unix milliseconds); ``ZREM <key> <id>`` frees one from any client.
    """

    limit: int
    ttl: float

    name: ClassVar[str] = "concurrency"

    def __post_init__(self) -> None:
        positive_int("limit", self.limit)
        if positive_number("ttl", self.ttl) < MIN_LEASE_TTL:
            raise ConfigurationError(f"ttl must be at least {MIN_LEASE_TTL} s, got {self.ttl}")

    def keys(self, base: str) -> list[str]:
        return [lease_key(base)]

    def parameters(self) -> list[str]:
        return [self.name, str(self.limit), str(round(self.ttl * 1000))]


RuleLimit = FixedWindow | PacedWindow | SlidingWindow | TokenBucket | Concurrency
"""What a rule may limit: every strategy of the package, and concurrency."""
_KINDS = {
    FixedWindow: "fixed",
    PacedWindow: "paced",
    SlidingWindow: "sliding",
    TokenBucket: "token",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit of a decision over several: a fixed, paced or sliding window, a token bucket,
    or a `Concurrency` (leases held at once), on its own ``scope`` (None: the limiter's own
    keys)."""

    limit: Strategy | Concurrency
    """A `RuleLimit`: typed as any strategy, so that a limiter's own ``strategy`` passes."""
    scope: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limit, RuleLimit):
            raise ConfigurationError(
                "a rule's limit must be FixedWindow, PacedWindow, SlidingWindow, TokenBucket or "
                "Concurrency, "
                f"not {type(self.limit).__name__}"
            )
        if self.scope is not None:
            key_part("scope", self.scope)

    def keys(self, base: str) -> list[str]:
        return self.limit.keys(base)

    def parameters(self) -> list[str]:
        limit = self.limit
        if isinstance(limit, Concurrency):
            return limit.parameters()
        return [_KINDS[type(limit)], *limit.parameters()]


@dataclass(frozen=True, slots=True)
class RulesDecision(Decision):
    """A `Decision` over several rules: ``limit`` and ``reset_after`` are the first rule's,
    ``remaining`` the least any rule has left, ``retry_after`` when every rule has room again."""

    limited_by: int | None = None
    """The index of the rule that held the grant back (denied, or granted fewer than asked)."""
    leases: tuple[str, ...] = ()
    """The lease ids taken, one per granted permit (the first ``granted`` of those asked for)."""
    expired_leases: int = 0
    """Leases this decision found past their ttl: their holders never freed them."""


def lease_key(base: str) -> str:
    return f"{base}:{LEASES_SUFFIX}"


def rules_base(prefix: str, scope: str | None, cluster: bool) -> str:
    """A rule's key base: a single limit's on the same scope (see `limit_base`)."""
    return limit_base(prefix, scope, cluster)


@dataclass(frozen=True, slots=True)
class RulesRequest:
    keys: tuple[str, ...]
    arguments: tuple[str, ...]
    """ARGV before the deadline and max_wait are filled in: see `evalsha`."""
    permits: int
    need: int
    leases: tuple[str, ...]
    first_is_own: bool
    """Whether rule 1 is the limiter's own limit on its own keys: only then is what Redis said
    of it what a later outage should share."""

    def evalsha(self, sha: str, max_wait: float, ahead_ms: int) -> tuple[str | int, ...]:
        """EVALSHA's arguments, with a deadline ``ahead_ms`` after the host's clock reads now
        (the request's lifetime, plus how far the host's clock is behind Redis's)."""
        deadline = str(time.time_ns() // 1_000_000 + ahead_ms)
        n, permits, partial, _, _, *rest = self.arguments
        head: tuple[str | int, ...] = (sha, len(self.keys), *self.keys)
        return (*head, n, permits, partial, repr(max_wait), deadline, *rest)


def build(
    rules: Sequence[Rule],
    permits: int,
    partial: bool,
    leases: Sequence[str],
    base_of: Callable[[str | None], str],
    adaptive: tuple[list[str], list[str]],
    own: object,
) -> RulesRequest:
    """The script call for ``rules``; ``adaptive`` is the prelude's keys (of rule 1's base) and
    arguments, ``own`` the limiter's own strategy."""
    if isinstance(rules, Rule) or not isinstance(rules, Sequence) or not rules:
        raise ConfigurationError("rules must be a non-empty sequence of Rule")
    for rule in rules:
        if not isinstance(rule, Rule):
            raise ConfigurationError(f"rules must hold Rule objects, not {type(rule).__name__}")
    if sum(isinstance(rule.limit, PacedWindow) for rule in rules) > 1:
        raise ConfigurationError("at most one rule of a decision may be a PacedWindow")
    non_negative_int("permits", permits)
    taken = _lease_ids(rules, permits, leases)
    keys: list[str] = []
    parameters: list[str] = []
    for rule in rules:
        keys += rule.keys(base_of(rule.scope))
        parameters += rule.parameters()
    adaptive_keys, adaptive_arguments = adaptive
    first = rules[0]
    if adaptive_keys and not isinstance(first.limit, Concurrency):
        keys += adaptive_keys
    else:
        adaptive_arguments = ["0"]
    arguments = (
        str(len(rules)),
        str(permits),
        "1" if partial else "0",
        "",
        "",
        str(len(taken)),
        *taken,
        *parameters,
        *adaptive_arguments,
    )
    need = min(permits, 1) if partial else permits
    first_is_own = first.scope is None and first.limit == own
    return RulesRequest(tuple(keys), arguments, permits, need, taken, first_is_own)


def _lease_ids(rules: Sequence[Rule], permits: int, leases: Sequence[str]) -> tuple[str, ...]:
    if isinstance(leases, str):
        raise ConfigurationError("leases must be a sequence of lease ids, not one str")
    taken = tuple(leases)
    if not any(isinstance(rule.limit, Concurrency) for rule in rules):
        if taken:
            raise ConfigurationError("leases are given only with a Concurrency rule")
        return ()
    if len(taken) != permits:
        raise ConfigurationError(
            f"a Concurrency rule needs one lease id per permit: {permits} permits, "
            f"{len(taken)} lease ids"
        )
    for lease in taken:
        lease_id(lease)
    if len(set(taken)) != len(taken):
        raise ConfigurationError("lease ids must be distinct")
    return taken


def lease_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_LEASE_ID_LENGTH:
        raise ConfigurationError(
            f"a lease id must be a str of 1 to {MAX_LEASE_ID_LENGTH} characters: {value!r:.60}"
        )
    return value


def parse(request: RulesRequest, reply: Sequence[bytes | str | int]) -> tuple[RulesDecision, float]:
    """The decision in rules.lua's reply, and the seconds to wait before its first permit."""
    allowed, granted, limit, remaining, retry_after, reset_after, wait, offsets, limited = reply[:9]
    count = int(granted)
    retry, reset, waited = float(retry_after), float(reset_after), float(wait)
    by = int(limited)
    decision = RulesDecision(
        allowed=bool(int(allowed)),
        granted=count,
        limit=int(limit),
        remaining=int(remaining),
        retry_after=retry if retry > 0.0 else 0.0,
        reset_after=reset if reset > 0.0 else 0.0,
        schedule=_schedule(offsets) if offsets else (),
        limited_by=by - 1 if by else None,
        leases=request.leases[:count],
        # Scripts before the count (a bench's baseline) reply with nine fields.
        expired_leases=int(reply[9]) if len(reply) > 9 else 0,
    )
    return decision, waited if waited > 0.0 else 0.0


def failed_open(request: RulesRequest, decision: Decision) -> RulesDecision:
    """The limiter's fail-mode decision as a `RulesDecision`: leases granted without Redis are
    not recorded anywhere, so there is nothing to free."""
    return RulesDecision(
        allowed=decision.allowed,
        granted=decision.granted,
        limit=decision.limit,
        remaining=decision.remaining,
        retry_after=decision.retry_after,
        reset_after=decision.reset_after,
        fail_open=decision.fail_open,
        waited=decision.waited,
        schedule=decision.schedule,
        leases=request.leases[: decision.granted],
    )


def wait_arguments(max_wait: object) -> float:
    return non_negative_number("max_wait", max_wait)
