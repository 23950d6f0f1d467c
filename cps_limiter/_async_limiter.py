"""AsyncLimiter: the asyncio I/O layer; all but its calls to Redis is `LimiterCore`'s and
`RulesCore`'s."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from ._adaptive import (
    AimdState,
    HealthReport,
    cap_arguments,
    clear_cap,
    health_fields,
    read_aimd_async,
    read_cap_async,
    read_health_async,
    refused_count,
    report_refused,
    set_cap,
    write_health,
)
from ._clock import aread_time
from ._connect import async_client, is_memory
from ._core import Request, split_options
from ._credentials import where
from ._decision import Decision
from ._errors import BackendUnavailable, LateRequest
from ._multi import RulesCore, held
from ._rules import Rule, RulesDecision
from ._scripts import ACQUIRE, PEEK, RESET
from ._steps import Call, Run, Step, Steps
from ._strategies import Strategy
from ._telemetry import Observation
from ._validation import positive_number
from ._wire import aevalsha

T = TypeVar("T")

DEFAULT_DECISION_TIMEOUT = 0.2
"""Seconds an AsyncLimiter gives one call to Redis before failing it (sync clients rely on
their socket timeouts, which from_url sets to 0.1 s)."""
MEMORY_DECISION_TIMEOUT = 5.0
"""The AsyncLimiter's deadline on memory://, where nothing can stall but a busy machine."""


class AsyncLimiter(RulesCore):
    """`Limiter` for asyncio, on ``redis.asyncio`` clients; methods are coroutines.

    Each call to Redis also has a deadline of ``decision_timeout`` seconds (0.2 by default).
    """

    _evalsha = staticmethod(aevalsha)
    _read_time = staticmethod(aread_time)

    @classmethod
    def _deadline(cls, decision_timeout: float | None) -> float:
        if decision_timeout is None:
            return DEFAULT_DECISION_TIMEOUT
        return positive_number("decision_timeout", decision_timeout)

    @classmethod
    def from_url(cls, url: str, strategy: Strategy, **options: Any) -> Self:
        """As `Limiter.from_url`, with an asyncio client, and without I/O: a wrong password
        raises `ConfigurationError` from the first call that meets it instead (until Redis
        has answered once; afterwards a refused password is an outage like any other)."""
        mine, client_options = split_options(options)
        if is_memory(url):
            # The deadline guards calls over a network; an in-process server has none, and the
            # sync memory:// client has no timeout either.
            mine.setdefault("decision_timeout", MEMORY_DECISION_TIMEOUT)
        limiter = cls(async_client(url, **client_options), strategy, **mine)
        limiter._owns_client = True
        limiter._backend.unchecked_credentials = where(url)
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

    async def run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """As `Limiter.run`, for an ``operation`` that returns an awaitable, which must also
        finish within ``decision_timeout``."""
        return await self._backend.acall(operation)

    async def report_health(
        self, cpu: float, answer_rate: float | None = None, scope: str | None = None
    ) -> None:
        """As `Limiter.report_health`."""
        fields, base = health_fields(cpu, answer_rate), self.key_base(scope)
        await self.run(lambda client: write_health(client, base, fields))

    async def health(self, scope: str | None = None) -> HealthReport:
        base = self.key_base(scope)
        return await self.run(lambda client: read_health_async(client, base))

    async def report_refused(self, refused: int, scope: str | None = None) -> None:
        """As `Limiter.report_refused`."""
        count, base = refused_count(refused), self.key_base(scope)
        await self.run(lambda client: report_refused(client, base, count))

    async def aimd(self, scope: str | None = None) -> AimdState:
        """As `Limiter.aimd`."""
        base = self.key_base(scope)
        return await self.run(lambda client: read_aimd_async(client, base))

    async def set_cap(self, limit: int, ttl: float, scope: str | None = None) -> None:
        """As `Limiter.set_cap`."""
        (value, milliseconds), base = cap_arguments(limit, ttl), self.key_base(scope)
        await self.run(lambda client: set_cap(client, base, value, milliseconds))

    async def clear_cap(self, scope: str | None = None) -> None:
        base = self.key_base(scope)
        await self.run(lambda client: clear_cap(client, base))

    async def cap(self, scope: str | None = None) -> tuple[int | None, float | None]:
        """As `Limiter.cap`."""
        base = self.key_base(scope)
        return await self.run(lambda client: read_cap_async(client, base))

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
        return await self._run(self._acquire_all(rules, permits, partial, max_wait, leases))

    async def free(self, scope: str | None, *lease_ids: str) -> int:
        """As `Limiter.free`."""
        key, ids = self._lease_ids(scope, lease_ids)
        return int(await self.run(lambda client: client.zrem(key, *ids))) if ids else 0

    release = free
    """The name `free` had first, kept for its callers."""

    async def leases_held(self, scope: str | None = None) -> tuple[int, float]:
        """As `Limiter.leases_held`."""
        return held(await self._make(self._leases_call(scope)))

    async def _call(self, request: Request) -> Decision:
        arguments = request.evalsha(self._clock.offset_ms)
        spare = self._backend.spare
        try:
            reply = await self._backend.acall(
                aevalsha, self._pool, arguments, spare, self._source, on_spare=True
            )
        except (LateRequest, BackendUnavailable) as error:
            return await self._run(self._recovered(request, error))
        return self._decided(request, reply)

    async def _run(self, steps: Steps[T]) -> T:
        """As `Limiter._run`."""
        run = Run(steps)
        while not run.done:
            with run:
                run.reply = await self._make(run.step)
        return run.value

    async def _make(self, step: Step) -> Any:
        if isinstance(step, Call):
            return await self._backend.acall(step.operation, *step.args, on_spare=step.on_spare)
        await asyncio.sleep(step)
        return None

    async def aclose(self) -> None:
        """As `Limiter.close`."""
        await self._backend.spare.agive_back()
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
