"""OpenTelemetry around the reliability tests: latency measured on the limiter alone, and the
limiter's decisions counter read from an SDK of the test's own."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cps_limiter import _telemetry
from tests.support.load import strategy


@contextlib.contextmanager
def latency_on_the_limiter() -> Iterator[None]:
    """No decision spans (a tracer provider installed by an earlier test keeps every span in
    memory), and what earlier tests left on the heap frozen out of garbage collection. Full
    collections of that heap paused decisions by up to 480 ms in a full run, where the same runs
    alone stayed under 130 ms."""
    gc.collect()
    gc.freeze()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_telemetry, "_active_tracer", lambda: None)
            yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def counted_decisions(strategy_name: str) -> Iterator[Callable[[], int]]:
    """While it lasts, the ``cps_limiter.decisions`` counter records into an SDK of its own,
    whatever global provider another test installed. Yields a reader of the fail_open total
    for the strategy."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter(_telemetry.INSTRUMENTATION_NAME).create_counter(
        _telemetry.COUNTER_NAME
    )
    name = strategy(strategy_name, 1).name

    def fail_open() -> int:
        data = reader.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes == {
                            "cps_limiter.strategy": name,
                            "cps_limiter.outcome": "fail_open",
                        }:
                            total += int(point.value)  # type: ignore[union-attr]
        return total

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_telemetry, "_decisions", counter)
        yield fail_open
    provider.shutdown()
