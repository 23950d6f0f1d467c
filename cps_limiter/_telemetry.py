"""OpenTelemetry through the API only: a span per decision and a counter of decisions.

Applications bring the SDK. Without one, the span is skipped altogether, so that tracing that
is off costs a type check per decision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import metrics, trace

from ._decision import Decision
from ._version import __version__

SPAN_NAME = "cps_limiter.acquire"
COUNTER_NAME = "cps_limiter.decisions"

_tracer = trace.get_tracer("cps_limiter", __version__)
_decisions = metrics.get_meter("cps_limiter", __version__).create_counter(
    COUNTER_NAME,
    unit="{decision}",
    description="Rate-limit decisions by strategy and outcome (allowed, denied, fail_open).",
)


def _tracing_configured() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class Observation:
    """Collects what one decision did, for the span and the counter."""

    __slots__ = ("decision", "span")

    def __init__(self, span: trace.Span | None) -> None:
        self.span = span
        self.decision: Decision | None = None


@contextlib.contextmanager
def observe(strategy: str, permits: int) -> Iterator[Observation]:
    """Wrap one decision; the caller sets ``observation.decision`` before leaving."""
    if not _tracing_configured():
        observation = Observation(None)
        yield observation
        _count(strategy, observation.decision)
        return
    with _tracer.start_as_current_span(SPAN_NAME) as span:
        observation = Observation(span)
        yield observation
        decision = observation.decision
        if decision is not None:
            span.set_attributes(
                {
                    "cps_limiter.strategy": strategy,
                    "cps_limiter.limit": decision.limit,
                    "cps_limiter.permits": permits,
                    "cps_limiter.granted": decision.granted,
                    "cps_limiter.allowed": decision.allowed,
                    "cps_limiter.fail_open": decision.fail_open,
                }
            )
        _count(strategy, decision)


def _count(strategy: str, decision: Decision | None) -> None:
    if decision is None:
        return
    outcome = "fail_open" if decision.fail_open else "allowed" if decision.allowed else "denied"
    _decisions.add(1, {"cps_limiter.strategy": strategy, "cps_limiter.outcome": outcome})
