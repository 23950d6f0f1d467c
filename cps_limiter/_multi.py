"""Decisions over several rules, leases, and the procedures `Limiter` and `AsyncLimiter` share.

`RulesCore` builds each call and reads each reply, and holds every procedure of more than
one step (`_steps`); the two limiters only make the steps, each with its own I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from ._adaptive import adaptive_key
from ._core import REQUEST_LIFETIME_MS, LimiterCore, Request
from ._decision import Decision
from ._errors import BackendUnavailable, LateRequest
from ._rules import (
    LEASES_SCRIPT,
    RULES_SCRIPT,
    Rule,
    RulesDecision,
    RulesRequest,
    build,
    failed_open,
    lease_id,
    lease_key,
    parse,
    rules_base,
    wait_arguments,
)
from ._scripts import lua_source, strategy_source
from ._steps import Call, Steps
from ._telemetry import Observation
from ._validation import key_part
from ._wire import Spare

RULES_SOURCE = strategy_source(RULES_SCRIPT)
RULES_SHA = hashlib.sha1(RULES_SOURCE.encode(), usedforsecurity=False).hexdigest()
LEASES_SOURCE = lua_source(LEASES_SCRIPT)
LEASES_SHA = hashlib.sha1(LEASES_SOURCE.encode(), usedforsecurity=False).hexdigest()
OBSERVED_NAME = "rules"
Arguments = Callable[[int], tuple[str | int, ...]]
"""A request's EVALSHA arguments for a host clock this many milliseconds behind Redis's."""


class RulesCore(LimiterCore):
    _evalsha: ClassVar[Callable[..., Any]]
    """`_wire.evalsha` or its asyncio twin: what a `Call` of a script runs."""
    _read_time: ClassVar[Callable[..., Any]]
    """`_clock.read_time` or its asyncio twin."""

    def rules_base(self, scope: str | None = None) -> str:
        """The name a rule's keys on ``scope`` start with (on a cluster, all under the prefix's
        hash tag)."""
        checked = None if scope is None else key_part("scope", scope)
        return rules_base(self._prefix, checked, self._cluster)

    def lease_key(self, scope: str | None = None) -> str:
        """The ZSET of a `Concurrency` rule's leases on ``scope``: ``ZREM <key> <lease id>``
        frees one from any client."""
        return lease_key(self.rules_base(scope))

    def _rules_request(
        self, rules: Sequence[Rule], permits: int, partial: bool, leases: Sequence[str]
    ) -> RulesRequest:
        adaptive: tuple[list[str], list[str]] = ([], [])
        if self._adaptive is not None and isinstance(rules, Sequence) and rules:
            base = self.rules_base(getattr(rules[0], "scope", None))
            adaptive = ([adaptive_key(base)], list(self._adaptive_arguments))
        return build(rules, permits, partial, leases, self.rules_base, adaptive, self._strategy)

    def _rules_decided(self, request: RulesRequest, reply: Any) -> tuple[RulesDecision, float]:
        decision, wait = parse(request, reply)
        if request.first_is_own:
            self._failure.learned(decision)
        return decision, wait

    def _rules_unavailable(
        self, request: RulesRequest, max_wait: float, error: BackendUnavailable
    ) -> RulesDecision:
        # The limiter's fail mode, on its own limit: rules on other scopes, and leases, are not
        # enforced while Redis is down (a lease granted so is recorded nowhere).
        decided = self._failure.decide(request.permits, request.need, max_wait, True, error)
        return failed_open(request, decided)

    def _lease_ids(self, scope: str | None, lease_ids: Sequence[str]) -> tuple[str, list[str]]:
        return self.lease_key(scope), [lease_id(lease) for lease in lease_ids]

    def _leases_call(self, scope: str | None) -> Call:
        arguments = (LEASES_SHA, 1, self.lease_key(scope))
        return Call(self._evalsha, (None, arguments, None, LEASES_SOURCE))

    def _acquire_all(
        self,
        rules: Sequence[Rule],
        permits: int,
        partial: bool,
        max_wait: float,
        leases: Sequence[str],
    ) -> Steps[RulesDecision]:
        request = self._rules_request(rules, permits, partial, leases)
        deadline = time.monotonic() + wait_arguments(max_wait)
        with Observation(OBSERVED_NAME, permits) as seen:
            while True:
                left = max(deadline - time.monotonic(), 0.0)
                decision, first = yield from self._rules_call(request, left)
                again = self._again(decision, deadline)
                if again is None:
                    break
                yield again
            seen.decision = decision
        if first:
            yield first
            decision = replace(decision, waited=first)
        return decision

    def _rules_call(
        self, request: RulesRequest, max_wait: float
    ) -> Steps[tuple[RulesDecision, float]]:
        def arguments(clock_offset_ms: int) -> tuple[str | int, ...]:
            return request.evalsha(RULES_SHA, max_wait, REQUEST_LIFETIME_MS + clock_offset_ms)

        try:
            try:
                first = arguments(self._clock.offset_ms)
                reply = yield Call(self._evalsha, (None, first, None, RULES_SOURCE))
            except LateRequest as late:
                reply = yield from self._resend(late, RULES_SOURCE, arguments, None)
        except BackendUnavailable as error:
            decision = self._rules_unavailable(request, max_wait, error)
            return decision, decision.waited
        return self._rules_decided(request, reply)

    def _recovered(
        self, request: Request, error: LateRequest | BackendUnavailable
    ) -> Steps[Decision]:
        """The decision on a request whose call failed: the fail mode's, or, when Redis ran it
        late, its reply once sent again (`_resend`)."""
        if isinstance(error, BackendUnavailable):
            return self._unavailable(request, error)
        spare = self._backend.spare
        try:
            reply = yield from self._resend(error, self._source, request.evalsha, spare)
        except BackendUnavailable as unavailable:
            return self._unavailable(request, unavailable)
        return self._decided(request, reply)

    def _resend(
        self, late: LateRequest, source: str, arguments: Arguments, spare: Spare | None
    ) -> Steps[Any]:
        """The reply to a request Redis ran late, sent once more with its deadline on Redis's
        clock; `BackendUnavailable` when the host's clock was not the cause."""
        if not self._clock.learned((yield Call(self._read_time, ()))):
            raise self._not_the_clock(late)
        again = arguments(self._clock.offset_ms)
        on_spare = spare is not None
        try:
            return (yield Call(self._evalsha, (self._pool, again, spare, source), on_spare))
        except LateRequest as still:
            raise self._not_the_clock(still) from still

    @staticmethod
    def _again(decision: RulesDecision, deadline: float) -> float | None:
        """Seconds to sleep before asking again, when the denial ends within ``max_wait``."""
        if decision.allowed or decision.fail_open:
            return None
        left = deadline - time.monotonic()
        return decision.retry_after if 0.0 < decision.retry_after <= left else None


def held(reply: Any) -> tuple[int, float]:
    """`leases_held`'s answer from the leases script's reply."""
    return int(reply[0]), float(reply[1])
