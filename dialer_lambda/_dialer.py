"""The dialer: the settings and the clients built from them, once per container, shared by
every invocation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from cps_limiter import AdaptivePolicy, Limiter, Strategy, strategy_from_name

from ._batch import run
from ._claims import ClaimStore
from ._config import Settings
from ._gate import SendGate
from ._logging import setup_logging
from ._metrics import MetricsRecorder
from ._report import BatchResult
from ._worker import WorkerClient

# Threads (and HTTP connections) for dials. A Lambda runs one invocation at a time and uses
# about a batch's worth (threads start lazily); the cap is for processes that run many
# invocations at once, such as the simulation.
DIAL_POOL_SIZE: Final = 64


def strategy_for(settings: Settings) -> Strategy:
    """The limiter strategy that ``CPS_STRATEGY`` names, at ``MAX_CPS`` per second."""
    return strategy_from_name(settings.strategy, settings.max_cps)


@dataclass(frozen=True, slots=True)
class Dialer:
    """Everything a batch needs, shared by all invocations: `from_settings` builds one.

    Holds no per-batch state, so concurrent invocations in one process (the simulation runs
    many in threads) are safe: the Redis and HTTP clients and the pool are thread-safe.
    """

    settings: Settings
    limiter: Limiter
    claims: ClaimStore
    worker: WorkerClient
    executor: ThreadPoolExecutor
    metrics: MetricsRecorder
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    gate: SendGate = field(default_factory=SendGate)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        redis_options: Mapping[str, Any] | None = None,
        worker_transport: httpx.BaseTransport | None = None,
    ) -> Dialer:
        """A dialer with clients of its own for ``settings`` (`close` it when done); the
        package's logger prints JSON lines at ``settings.log_level``. ``redis_options`` go to
        the Redis client (``connection_class``, ``socket_timeout``, ...), ``worker_transport``
        to the worker's httpx client."""
        setup_logging(settings.log_level)
        limiter = Limiter.from_url(
            settings.redis_url,
            strategy_for(settings),
            prefix=settings.cps_key_prefix,
            fail_mode=settings.fail_mode,
            # Always on: without a health report or an operator's cap the limit is MAX_CPS,
            # and both are read inside the decision's script, at no extra round trip.
            adaptive=AdaptivePolicy(),
            # Until the claims' heartbeat says how many containers dial, a Redis outage paces
            # this one at a conservative share of the limit.
            peers=settings.fallback_containers,
            **(redis_options or {}),
        )
        return cls(
            settings=settings,
            limiter=limiter,
            claims=ClaimStore(
                limiter,
                settings.idempotency_ttl,
                settings.idempotency_key_prefix,
                fleet_key=f"{settings.cps_key_prefix}:fleet",
            ),
            worker=WorkerClient(
                settings.node_worker_url,
                settings.dial_timeout,
                max_connections=DIAL_POOL_SIZE,
                transport=worker_transport,
            ),
            executor=ThreadPoolExecutor(max_workers=DIAL_POOL_SIZE, thread_name_prefix="dial"),
            metrics=MetricsRecorder(settings.service_name),
        )

    def process(self, event: Any, context: Any = None) -> BatchResult:
        """Handle one event of the pipe; see `dialer_lambda._batch`."""
        if not isinstance(event, list):
            hint = (
                " (an SQS event with 'Records': the dialer expects the pipe's batch, a bare list)"
                if isinstance(event, dict) and "Records" in event
                else ""
            )
            raise ValueError(
                f"event must be a JSON array of dial tasks, got {type(event).__name__}{hint}"
            )
        return run(self, event, context)

    def close(self) -> None:
        """Wait for running dials, then close the HTTP and Redis clients."""
        self.executor.shutdown(wait=True)
        self.worker.close()
        self.limiter.close()
