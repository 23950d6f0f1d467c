"""Limiter: the sync I/O layer; all but its calls to Redis is `LimiterCore`'s and
`RulesCore`'s."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from ._adaptive import (
    AimdState,
    HealthReport,
    cap_arguments,
    clear_cap,
    health_fields,
    read_aimd,
    read_cap,
    read_health,
    refused_count,
    report_refused,
    set_cap,
    write_health,
)
from ._clock import read_time
from ._connect import sync_client
from ._core import Request, split_options
from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError, LateRequest
from ._multi import RulesCore, held
from ._rules import Rule, RulesDecision
from ._scripts import ACQUIRE, PEEK, RESET
from ._steps import Call, Run, Step, Steps
from ._strategies import Strategy
from ._telemetry import observed
from ._wire import evalsha

T = TypeVar("T")


class Limiter(RulesCore):
    """A rate limiter on a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client.

    Every decision is one atomic script on the Redis server clock. With ``fail_mode="open"``
    (the default) a Redis that errs or times out yields an allowed Decision with
    ``fail_open=True``; with ``"closed"`` it raises `BackendUnavailable`.
    """

    _evalsha = staticmethod(evalsha)
    _read_time = staticmethod(read_time)

    @classmethod
    def _deadline(cls, decision_timeout: float | None) -> None:
        if decision_timeout is not None:
            raise ConfigurationError(
                "decision_timeout applies to AsyncLimiter only: a sync Limiter's decisions "
                "are bounded by its client's socket timeouts (socket_timeout, "
                "socket_connect_timeout)"
            )

    @classmethod
    def from_url(cls, url: str, strategy: Strategy, **options: Any) -> Self:
        """A limiter on ``redis://``, ``rediss://``, ``unix://`` or ``memory://`` (in-process).

        ``?cluster=true`` in a redis(s) URL connects to a Redis Cluster. Options other than
        the limiter's go to the client (``ssl_ca_certs``, ``socket_timeout``, ...). A wrong
        password raises `ConfigurationError` here.
        """
        mine, client_options = split_options(options)
        # Refused before the client is made, which would connect for nothing.
        cls._deadline(mine.get("decision_timeout"))
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
        decision = observed(self._strategy.name, permits, self._decide, request)
        if decision.waited:
            time.sleep(decision.waited)
        return decision

    def _decide(self, request: Request) -> Decision:
        return self._cached_denial(request) or self._call(request)

    def peek(self, scope: str | None = None) -> Decision:
        """The state now, as a decision for one permit that consumes nothing."""
        return self._call(self._request(scope, 0, False, 0.0, PEEK))

    def reset(self, scope: str | None = None) -> None:
        """Forget every grant of ``scope``."""
        self._forget_denials(scope)
        self._call(self._request(scope, 0, False, 0.0, RESET))

    def run(self, operation: Callable[[Any], T]) -> T:
        """``operation(self.client)``'s result, through the limiter's circuit breaker.

        Raises `BackendUnavailable` (from the error) when Redis fails or the breaker is open;
        whatever ``operation`` raises counts as Redis failing, so check arguments before.
        For data a caller keeps beside the limit's, so that one outage is noticed once.
        """
        return self._backend.call(operation)

    def report_health(
        self, cpu: float, answer_rate: float | None = None, scope: str | None = None
    ) -> None:
        """Write the dialing host's health, which an ``adaptive`` limiter reads."""
        fields, base = health_fields(cpu, answer_rate), self.key_base(scope)
        self.run(lambda client: write_health(client, base, fields))

    def health(self, scope: str | None = None) -> HealthReport:
        base = self.key_base(scope)
        return self.run(lambda client: read_health(client, base))

    def report_refused(self, refused: int, scope: str | None = None) -> None:
        """Add calls the carrier refused, which an ``adaptive`` limiter's AIMD reads."""
        count, base = refused_count(refused), self.key_base(scope)
        self.run(lambda client: report_refused(client, base, count))

    def aimd(self, scope: str | None = None) -> AimdState:
        """The refusals pending and the AIMD limit of the last decrease."""
        base = self.key_base(scope)
        return self.run(lambda client: read_aimd(client, base))

    def set_cap(self, limit: int, ttl: float, scope: str | None = None) -> None:
        """Replace the base limit with ``limit`` for ``ttl`` seconds (an ``adaptive`` limiter)."""
        (value, milliseconds), base = cap_arguments(limit, ttl), self.key_base(scope)
        self.run(lambda client: set_cap(client, base, value, milliseconds))

    def clear_cap(self, scope: str | None = None) -> None:
        base = self.key_base(scope)
        self.run(lambda client: clear_cap(client, base))

    def cap(self, scope: str | None = None) -> tuple[int | None, float | None]:
        """The operator's cap and the seconds it has left, or ``(None, None)``."""
        base = self.key_base(scope)
        return self.run(lambda client: read_cap(client, base))

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
        return self._run(self._acquire_all(rules, permits, partial, max_wait, leases))

    def free(self, scope: str | None, *lease_ids: str) -> int:
        """Free leases of the `Concurrency` rule on ``scope`` by id, from any process; how
        many were live. Raises `BackendUnavailable` when Redis fails (a lease not freed
        expires by itself)."""
        key, ids = self._lease_ids(scope, lease_ids)
        return int(self.run(lambda client: client.zrem(key, *ids))) if ids else 0

    release = free
    """The name `free` had first, kept for its callers."""

    def leases_held(self, scope: str | None = None) -> tuple[int, float]:
        """The live leases on ``scope``, and the seconds until the next one expires."""
        return held(self._make(self._leases_call(scope)))

    def _call(self, request: Request) -> Decision:
        arguments = request.evalsha(self._clock.offset_ms)
        spare = self._backend.spare
        try:
            reply = self._backend.call(
                evalsha, self._pool, arguments, spare, self._source, on_spare=True
            )
        except (LateRequest, BackendUnavailable) as error:
            return self._run(self._recovered(request, error))
        return self._decided(request, reply)

    def _run(self, steps: Steps[T]) -> T:
        """A procedure's result, each of its steps made here (`_steps`)."""
        run = Run(steps)
        while not run.done:
            with run:
                run.reply = self._make(run.step)
        return run.value

    def _make(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self._backend.call(step.operation, *step.args, on_spare=step.on_spare)
        time.sleep(step)
        return None

    def close(self) -> None:
        """Give back the connection kept between decisions; close the client if this limiter
        made it (from_url)."""
        self._backend.spare.give_back()
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
