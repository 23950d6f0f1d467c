"""OpenTelemetry through the API only: a span per decision and a counter of decisions.

Applications bring the SDK. Without one, the span is skipped altogether, so that tracing that
is off costs a provider check and a no-op counter call per decision. The context manager is a
plain class rather than a generator, and the span is started on the SDK's tracer directly
rather than through the API's proxy: each layer of generator context managers costs about a
microsecond on every decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import TypeVar

from opentelemetry import context, metrics, trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import Attributes

from ._decision import Decision
from ._version import __version__

SPAN_NAME = "cps_limiter.acquire"
COUNTER_NAME = "cps_limiter.decisions"
INSTRUMENTATION_NAME = "cps_limiter"

_decisions = metrics.get_meter(INSTRUMENTATION_NAME, __version__).create_counter(
    COUNTER_NAME,
    unit="{decision}",
    description="Rate-limit decisions by strategy and outcome (allowed, denied, fail_open).",
)
# A provider can be set only once per process, so the tracer is looked up until one is and then
# kept for good.
_tracer: trace.Tracer | None = None
# One attribute set per strategy and outcome, built once rather than on every decision.
_outcome_attributes: dict[tuple[str, str], Attributes] = {}
# Until a provider is set, get_tracer_provider() looks the environment up on every call, which
# is most of what tracing that is off costs. The API's module global it guards is read first;
# the environment is consulted only if it named a provider when the process started (or if a
# later API no longer has that global).
_UNKNOWN = object()
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def _active_tracer() -> trace.Tracer | None:
    """The SDK's tracer, or None while no tracer provider is configured."""
    global _tracer
    if _tracer is None:
        if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return None
        _tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    return _tracer


class Observation:
    """Wraps one decision as a context manager; the caller sets ``decision`` before leaving.

    With a tracer provider the decision is the current span while it runs, so that spans of
    instrumented Redis clients nest under it.
    """

    __slots__ = ("_permits", "_span", "_strategy", "_token", "decision")

    def __init__(self, strategy: str, permits: int) -> None:
        self._strategy = strategy
        self._permits = permits
        self._span: trace.Span | None = None
        self._token: Token[Context] | None = None
        self.decision: Decision | None = None

    def __enter__(self) -> Observation:
        tracer = _active_tracer()
        if tracer is not None:
            self._span = span = tracer.start_span(SPAN_NAME)
            self._token = context.attach(trace.set_span_in_context(span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        decision = self.decision
        span = self._span
        if span is not None:
            if self._token is not None:
                context.detach(self._token)
            # A span the sampler dropped records nothing: skip building its attributes.
            if decision is not None and span.is_recording():
                span.set_attributes(
                    {
                        "cps_limiter.strategy": self._strategy,
                        "cps_limiter.limit": decision.limit,
                        "cps_limiter.permits": self._permits,
                        "cps_limiter.granted": decision.granted,
                        "cps_limiter.allowed": decision.allowed,
                        "cps_limiter.fail_open": decision.fail_open,
                    }
                )
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        if decision is not None:
            _count(self._strategy, decision)


R = TypeVar("R")


def observed(strategy: str, permits: int, decide: Callable[[R], Decision], request: R) -> Decision:
    """``decide(request)``, counted, and the current span while it runs when a tracer provider
    is set (`Observation`).

    Without a provider it is a call and a count: no object per decision, which the context
    manager would build. A coroutine cannot pass through a plain function, so `AsyncLimiter`
    takes `Observation` itself.
    """
    if _active_tracer() is None:
        decision = decide(request)
        _count(strategy, decision)
        return decision
    with Observation(strategy, permits) as seen:
        seen.decision = decision = decide(request)
    return decision


def _count(strategy: str, decision: Decision) -> None:
    outcome = "fail_open" if decision.fail_open else "allowed" if decision.allowed else "denied"
    attributes = _outcome_attributes.get((strategy, outcome))
    if attributes is None:
        attributes = {"cps_limiter.strategy": strategy, "cps_limiter.outcome": outcome}
        _outcome_attributes[strategy, outcome] = attributes
    _decisions.add(1, attributes)
