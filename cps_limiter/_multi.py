"""Decisions over several rules, and leases, for `Limiter` and `AsyncLimiter`.

`RulesCore` builds the call and reads the reply; `SyncRules` and `AsyncRules` differ only in
the call to Redis and in how they wait, as the limiters do.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ._adaptive import adaptive_key
from ._clock import aread_time, read_time
from ._core import REQUEST_LIFETIME_MS, LimiterCore
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
from ._telemetry import Observation
from ._validation import key_part
from ._wire import Spare, aevalsha, evalsha

RULES_SOURCE = strategy_source(RULES_SCRIPT)
RULES_SHA = hashlib.sha1(RULES_SOURCE.encode(), usedforsecurity=False).hexdigest()
LEASES_SOURCE = lua_source(LEASES_SCRIPT)
LEASES_SHA = hashlib.sha1(LEASES_SOURCE.encode(), usedforsecurity=False).hexdigest()
OBSERVED_NAME = "rules"
Arguments = Callable[[int], tuple[str | int, ...]]
"""A request's EVALSHA arguments for a host clock this many milliseconds behind Redis's."""


class RulesCore(LimiterCore):
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

    @staticmethod
    def _again(decision: RulesDecision, deadline: float) -> float | None:
        """Seconds to sleep before asking again, when the denial ends within ``max_wait``."""
        if decision.allowed or decision.fail_open:
            return None
        left = deadline - time.monotonic()
        return decision.retry_after if 0.0 < decision.retry_after <= left else None


class SyncRules(RulesCore):
    def acquire_all(
        self,
        rules: Sequence[Rule],
        permits: int = 1,
        *,
        partial: bool = False,
        max_wait: float = 0.0,
        leases: Sequence[str] = (),
    ) -> RulesDecision:
        """``permits`` under every rule at once, all or nothing (with ``partial=True``, the
        longest run every rule allows): one script, one round trip, and a rule that denies
        leaves nothing taken from the others. A `Concurrency` rule takes one lease per permit,
        named by ``leases``. A paced rule reserves slots within ``max_wait``; otherwise a
        denial that ends within ``max_wait`` is slept through and asked again."""
        request = self._rules_request(rules, permits, partial, leases)
        wait = wait_arguments(max_wait)
        deadline = time.monotonic() + wait
        with Observation(OBSERVED_NAME, permits) as seen:
            while True:
                left = max(deadline - time.monotonic(), 0.0)
                decision, first = self._rules_call(request, left)
                again = self._again(decision, deadline)
                if again is None:
                    break
                time.sleep(again)
            seen.decision = decision
        if first:
            time.sleep(first)
            decision = _waited(decision, first)
        return decision

    def free(self, scope: str | None, *lease_ids: str) -> int:
        """Free leases of the `Concurrency` rule on ``scope`` by id, from any process; how
        many were live. Raises `BackendUnavailable` when Redis fails (a lease not freed
        expires by itself)."""
        key, ids = self.lease_key(scope), [lease_id(lease) for lease in lease_ids]
        if not ids:
            return 0
        return int(self._backend.call(lambda client: client.zrem(key, *ids)))

    release = free
    """The name `free` had first, kept for its callers."""

    def leases_held(self, scope: str | None = None) -> tuple[int, float]:
        """The live leases on ``scope``, and the seconds until the next one expires."""
        arguments = (LEASES_SHA, 1, self.lease_key(scope))
        reply = self._backend.call(evalsha, None, arguments, None, LEASES_SOURCE)
        return int(reply[0]), float(reply[1])

    def _rules_call(self, request: RulesRequest, max_wait: float) -> tuple[RulesDecision, float]:
        def arguments(clock_offset_ms: int) -> tuple[str | int, ...]:
            return request.evalsha(RULES_SHA, max_wait, REQUEST_LIFETIME_MS + clock_offset_ms)

        try:
            try:
                first = arguments(self._clock.offset_ms)
                reply = self._backend.call(evalsha, None, first, None, RULES_SOURCE)
            except LateRequest as late:
                reply = self._resend(late, RULES_SOURCE, arguments, None)
        except BackendUnavailable as error:
            decision = self._rules_unavailable(request, max_wait, error)
            return decision, decision.waited
        return self._rules_decided(request, reply)

    def _resend(
        self, late: LateRequest, source: str, arguments: Arguments, spare: Spare | None
    ) -> Any:
        """The reply to a request Redis ran late, sent once more with its deadline on Redis's
        clock; `BackendUnavailable` when the host's clock was not the cause."""
        if not self._clock.learned(self._backend.call(read_time)):
            raise self._not_the_clock(late)
        again = arguments(self._clock.offset_ms)
        try:
            return self._backend.call(
                evalsha, self._pool, again, spare, source, on_spare=spare is not None
            )
        except LateRequest as still:
            raise self._not_the_clock(still) from still


class AsyncRules(RulesCore):
    async def acquire_all(
        self,
        rules: Sequence[Rule],
        permits: int = 1,
        *,
        partial: bool = False,
        max_wait: float = 0.0,
        leases: Sequence[str] = (),
    ) -> RulesDecision:
        """As `Limiter.acquire_all`."""
        request = self._rules_request(rules, permits, partial, leases)
        wait = wait_arguments(max_wait)
        deadline = time.monotonic() + wait
        with Observation(OBSERVED_NAME, permits) as seen:
            while True:
                left = max(deadline - time.monotonic(), 0.0)
                decision, first = await self._rules_call(request, left)
                again = self._again(decision, deadline)
                if again is None:
                    break
                await asyncio.sleep(again)
            seen.decision = decision
        if first:
            await asyncio.sleep(first)
            decision = _waited(decision, first)
        return decision

    async def free(self, scope: str | None, *lease_ids: str) -> int:
        """As `Limiter.free`."""
        key, ids = self.lease_key(scope), [lease_id(lease) for lease in lease_ids]
        if not ids:
            return 0
        return int(await self._backend.acall(lambda client: client.zrem(key, *ids)))

    release = free
    """The name `free` had first, kept for its callers."""

    async def leases_held(self, scope: str | None = None) -> tuple[int, float]:
        """As `Limiter.leases_held`."""
        arguments = (LEASES_SHA, 1, self.lease_key(scope))
        reply = await self._backend.acall(aevalsha, None, arguments, None, LEASES_SOURCE)
        return int(reply[0]), float(reply[1])

    async def _rules_call(
        self, request: RulesRequest, max_wait: float
    ) -> tuple[RulesDecision, float]:
        def arguments(clock_offset_ms: int) -> tuple[str | int, ...]:
            return request.evalsha(RULES_SHA, max_wait, REQUEST_LIFETIME_MS + clock_offset_ms)

        try:
            try:
                first = arguments(self._clock.offset_ms)
                reply = await self._backend.acall(aevalsha, None, first, None, RULES_SOURCE)
            except LateRequest as late:
                reply = await self._resend(late, RULES_SOURCE, arguments, None)
        except BackendUnavailable as error:
            decision = self._rules_unavailable(request, max_wait, error)
            return decision, decision.waited
        return self._rules_decided(request, reply)

    async def _resend(
        self, late: LateRequest, source: str, arguments: Arguments, spare: Spare | None
    ) -> Any:
        """As `Limiter._resend`."""
        if not self._clock.learned(await self._backend.acall(aread_time)):
            raise self._not_the_clock(late)
        again = arguments(self._clock.offset_ms)
        try:
            return await self._backend.acall(
                aevalsha, self._pool, again, spare, source, on_spare=spare is not None
            )
        except LateRequest as still:
            raise self._not_the_clock(still) from still


def _waited(decision: RulesDecision, seconds: float) -> RulesDecision:
    return replace(decision, waited=seconds)
