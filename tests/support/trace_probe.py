"""Run one batch with the OpenTelemetry SDK installed and write the finished spans as JSON.

It runs in a process of its own: OpenTelemetry takes one global tracer provider per process,
and in the test process that one belongs to the limiter's telemetry tests.

Usage: python -m tests.support.trace_probe WORKER_URL SPANS_FILE < batch.json
"""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def main() -> None:
    worker_url, spans_file = sys.argv[1:3]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from tests.support.dialer import dialer_for

    with closing(dialer_for({"REDIS_URL": "memory://", "NODE_WORKER_URL": worker_url})) as dialer:
        dialer.process(json.load(sys.stdin), None)

    spans = [
        {
            "name": span.name,
            "id": format(span.context.span_id, "016x"),
            "trace": format(span.context.trace_id, "032x"),
            "parent": None if span.parent is None else format(span.parent.span_id, "016x"),
            "links": [format(link.context.span_id, "016x") for link in span.links],
            "attributes": dict(span.attributes or {}),
        }
        for span in exporter.get_finished_spans()
    ]
    Path(spans_file).write_text(json.dumps(spans))


if __name__ == "__main__":
    main()
