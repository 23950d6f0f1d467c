"""The Lambda entry point: ``dialer_lambda.handler.handler(event, context)``.

Settings and clients are built here once per container, at import (the Lambda init phase), and
reused by every warm invocation: a Redis connection pool, the limiter's registered scripts, a
pooled HTTP client and a thread pool for concurrent dials. A bad setting fails the import, with
a message naming the variable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from cps_limiter import AdaptivePolicy, FixedWindow, Limiter, SlidingWindow, Strategy, TokenBucket

from ._batch import BatchResult, Dialer
from ._config import Settings
from ._idempotency import ClaimStore
from ._logging import setup_logging
from ._metrics import MetricsRecorder
from ._worker import WorkerClient

# Threads (and HTTP connections) for dials. A Lambda runs one invocation at a time and uses
# about a batch's worth (threads start lazily); the cap is for processes that run many
# invocations at once, such as the simulation.
DIAL_POOL_SIZE: Final = 64
# Inside Lambda the runtime's root handler would print the limiter's records as plain text;
# route them through the JSON handler too.
_LAMBDA_ENV: Final = "AWS_LAMBDA_FUNCTION_NAME"

_lock = threading.Lock()
_dialer: Dialer | None = None


def strategy_for(settings: Settings) -> Strategy:
    """The limiter strategy that ``CPS_STRATEGY`` names, at ``MAX_CPS`` per second."""
    if settings.strategy == "sliding":
        return SlidingWindow(limit=settings.max_cps)
    if settings.strategy == "token":
        # A burst of 1 spaces calls 1/MAX_CPS apart, so no one-second interval holds more than
        # MAX_CPS: carriers count any second. A larger burst would let burst + MAX_CPS - 1 in.
        return TokenBucket(rate=settings.max_cps, burst=1)
    return FixedWindow(limit=settings.max_cps)


def build(settings: Settings) -> Dialer:
    """A dialer with fresh clients for ``settings``."""
    limiter = Limiter.from_url(
        settings.redis_url,
        strategy_for(settings),
        prefix=settings.cps_key_prefix,
        fail_mode=settings.fail_mode,
        # Always on: without a health report or an operator's cap the limit is MAX_CPS, and
        # both are read inside the decision's script, at no extra round trip.
        adaptive=AdaptivePolicy(),
    )
    return Dialer(
        settings=settings,
        limiter=limiter,
        claims=ClaimStore(
            limiter.client, settings.idempotency_ttl, settings.idempotency_key_prefix
        ),
        worker=WorkerClient(
            settings.node_worker_url, settings.dial_timeout, max_connections=DIAL_POOL_SIZE
        ),
        executor=ThreadPoolExecutor(max_workers=DIAL_POOL_SIZE, thread_name_prefix="dial"),
        metrics=MetricsRecorder(settings.service_name),
    )


def configure(env: Mapping[str, str] | None = None) -> Dialer:
    """(Re)build the module's settings and clients from ``env`` (default: ``os.environ``).

    Import calls it once. Tests and the simulation call it again to switch environments
    without re-importing; the previous clients are closed, so do not call it while
    invocations are running.
    """
    global _dialer
    source = os.environ if env is None else env
    settings = Settings.from_env(source)
    setup_logging(
        settings.log_level, extra_loggers=("cps_limiter",) if _LAMBDA_ENV in source else ()
    )
    dialer = build(settings)
    with _lock:
        previous, _dialer = _dialer, dialer
    if previous is not None:
        previous.close()
    return dialer


def current() -> Dialer:
    """The dialer that invocations use now."""
    dialer = _dialer
    if dialer is None:  # pragma: no cover - import configures it
        return configure()
    return dialer


def handler(event: Any, context: Any = None) -> BatchResult:
    """Process one batch from the pipe; see `dialer_lambda._batch`."""
    return current().process(event, context)


configure()
