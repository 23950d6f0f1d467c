"""OpenTelemetry: a span per decision with the contract's attributes, and a decision counter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cps_limiter import FixedWindow, Limiter, TokenBucket
from loadtest.servers import free_port


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def decisions(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "cps_limiter.decisions":
                        continue
                    for point in metric.data.data_points:
                        attributes = point.attributes or {}
                        key = (
                            str(attributes["cps_limiter.strategy"]),
                            str(attributes["cps_limiter.outcome"]),
                        )
                        counts[key] = int(point.value)  # type: ignore[union-attr]
        return counts


_SDK: Telemetry | None = None


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """The SDK, installed once per process (OpenTelemetry allows a single global provider)."""
    global _SDK
    if _SDK is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _SDK = Telemetry(exporter, reader)
    _SDK.spans.clear()
    yield _SDK
    # The provider stays for the rest of the session: keep its exporter from hoarding spans.
    _SDK.spans.clear()


def test_each_decision_is_a_span_with_the_contract_attributes(
    telemetry: Telemetry, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(5), prefix=prefix)
    limiter.acquire(permits=3)
    (span,) = telemetry.spans.get_finished_spans()
    assert span.name == "cps_limiter.acquire"
    assert dict(span.attributes or {}) == {
        "cps_limiter.strategy": "fixed_window",
        "cps_limiter.limit": 5,
        "cps_limiter.permits": 3,
        "cps_limiter.granted": 3,
        "cps_limiter.allowed": True,
        "cps_limiter.fail_open": False,
    }


def test_the_span_nests_under_the_callers_span(
    telemetry: Telemetry, redis_url: str, prefix: str
) -> None:
    limiter = Limiter.from_url(redis_url, TokenBucket(rate=5), prefix=prefix)
    with trace.get_tracer("test").start_as_current_span("dial") as parent:
        limiter.acquire()
    spans = {s.name: s for s in telemetry.spans.get_finished_spans()}
    child = spans["cps_limiter.acquire"]
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id


def test_a_fail_open_decision_is_marked_on_the_span(telemetry: Telemetry) -> None:
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", FixedWindow(5))
    limiter.acquire()
    (span,) = telemetry.spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["cps_limiter.fail_open"] is True
    assert span.attributes["cps_limiter.allowed"] is True


def test_decisions_are_counted_by_strategy_and_outcome(
    telemetry: Telemetry, redis_url: str, prefix: str
) -> None:
    before = telemetry.decisions()
    # Two permits an hour: none comes back while the test runs.
    limiter = Limiter.from_url(redis_url, TokenBucket(rate=2, period=3600), prefix=prefix)
    for _ in range(3):
        limiter.acquire()
    Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", TokenBucket(rate=2)).acquire()
    after = telemetry.decisions()

    def delta(outcome: str) -> int:
        key = ("token_bucket", outcome)
        return after.get(key, 0) - before.get(key, 0)

    assert (delta("allowed"), delta("denied"), delta("fail_open")) == (2, 1, 1)


class UnplannedFailure:
    """A client library failing in a way nobody planned for."""

    def evalsha(self, *args: Any) -> Any:
        raise ValueError("range() arg 3 must not be zero")


def test_an_unplanned_client_error_is_counted_as_a_fail_open_decision(
    telemetry: Telemetry,
) -> None:
    before = telemetry.decisions().get(("fixed_window", "fail_open"), 0)
    Limiter(UnplannedFailure(), FixedWindow(5)).acquire()
    assert telemetry.decisions().get(("fixed_window", "fail_open"), 0) == before + 1
