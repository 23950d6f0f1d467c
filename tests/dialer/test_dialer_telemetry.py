"""Logs, metrics and traces of the dialer: JSON lines with masked phones, EMF, OpenTelemetry."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from dialer_lambda import BatchMetrics, mask_phone
from dialer_lambda._logging import JsonFormatter, mask_text
from dialer_lambda._metrics import NAMESPACE, MetricsRecorder, emf_record
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, Lines, MakeDialer, RecordingWorker, make_batch

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
METRIC_NAMES = {
    "DialTasksProcessed",
    "DialTasksSuccessful",
    "DialTasksFailed",
    "DialTasksRateLimited",
    "DialTasksDuplicate",
    "CurrentCPS",
    "RedisUnavailable",
    "WorkerRequests",
    "WorkerHttpErrors",
    "LeasesExpired",
    "WorkerRefusals",
    "LimitInForce",
}
PER_SECOND = {"CurrentCPS", "LimitInForce"}


# -- masking ------------------------------------------------------------------------------------


def test_a_phone_number_keeps_its_prefix_and_last_two_digits() -> None:
    assert mask_phone("+972501234567") == "+97*******67"


def test_a_short_value_is_masked_entirely() -> None:
    assert mask_phone("+123") == "*******"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("calling +972501234567 now", "calling +97*******67 now"),
        ("bare 972501234567.", "bare 972*******67."),
        ("spaced +1 (415) 555-0100", "spaced +1 *******00"),
        ('{"phone":"+14155550100"}', '{"phone":"+14*******00"}'),
    ],
)
def test_phone_numbers_are_masked_anywhere_in_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "call-campaign-123-contact-456-1705318245000",
        "2024-01-15T10:30:00.000Z",
        "waited 0.1234567891 s",
        "contact-456",
    ],
)
def test_ids_times_and_decimals_are_left_alone(text: str) -> None:
    assert mask_text(text) == text


def _format(message: str, *args: Any, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("dialer_lambda", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    parsed: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return parsed


def test_a_log_record_is_one_json_object_with_its_extras() -> None:
    entry = _format("dialed %s", "x", event="dial_success", callId="call-1")

    assert entry["message"] == "dialed x"
    assert (entry["event"], entry["callId"], entry["level"]) == ("dial_success", "call-1", "INFO")


def test_the_formatter_masks_phones_in_the_message_its_arguments_and_its_extras() -> None:
    entry = _format(
        "dialing %s", "+972501234567", phone="+972501234568", nested={"to": ["+972501234569"]}
    )

    text = json.dumps(entry)
    for digits in ("501234567", "501234568", "501234569"):
        assert digits not in text
    assert entry["message"] == "dialing +97*******67"


def test_an_exception_in_a_log_record_is_masked_too() -> None:
    try:
        raise ValueError("bad number +972501234567")
    except ValueError:
        record = logging.LogRecord(
            "dialer_lambda", logging.ERROR, __file__, 1, "oops", (), exc_info=sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))

    assert "+97*******67" in entry["exception"]
    assert "501234567" not in entry["exception"]


# -- metrics ------------------------------------------------------------------------------------


def test_the_emf_record_has_the_namespace_dimension_and_every_metric() -> None:
    record = emf_record(BatchMetrics(DialTasksProcessed=10, CurrentCPS=7), "dialer-worker", 123)

    [directive] = record["_aws"]["CloudWatchMetrics"]  # type: ignore[index]
    assert directive["Namespace"] == NAMESPACE == "DialerWorker"
    assert directive["Dimensions"] == [["service"]]
    units = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert set(units) == METRIC_NAMES
    assert {name for name, unit in units.items() if unit == "Count/Second"} == PER_SECOND
    assert {name for name, unit in units.items() if unit == "Count"} == METRIC_NAMES - PER_SECOND
    assert (record["service"], record["DialTasksProcessed"], record["CurrentCPS"]) == (
        "dialer-worker",
        10,
        7,
    )


def test_a_batch_prints_one_emf_line_with_its_figures(
    make_dialer: MakeDialer, stub: WorkerStub, lines: Lines
) -> None:
    dialer = make_dialer(MAX_CPS="8", RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding")
    stub.set_behaviour("+972501200000", http_500=1.0)

    dialer.process(make_batch(10), FakeContext())

    [emf] = lines.emf()
    assert emf["service"] == "dialer-worker"
    assert {name: emf[name] for name in sorted(METRIC_NAMES)} == {
        "CurrentCPS": 8,
        "DialTasksDuplicate": 0,
        "DialTasksFailed": 1,
        "DialTasksProcessed": 10,
        "DialTasksRateLimited": 2,
        "DialTasksSuccessful": 7,
        "RedisUnavailable": 0,
        "WorkerHttpErrors": 1,
        "WorkerRequests": 8,
        "LeasesExpired": 0,
        "WorkerRefusals": 0,
        "LimitInForce": 8,
    }


def test_service_name_sets_the_emf_dimension(make_dialer: MakeDialer, lines: Lines) -> None:
    dialer = make_dialer(SERVICE_NAME="dialer-staging")

    dialer.process(make_batch(1), FakeContext())

    assert lines.emf()[0]["service"] == "dialer-staging"


def test_the_same_figures_go_through_the_opentelemetry_metrics_api() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("dialer_lambda")
    recorder = MetricsRecorder("dialer-worker", meter)

    recorder.record(BatchMetrics(DialTasksProcessed=10, DialTasksSuccessful=9, CurrentCPS=9))
    recorder.record(BatchMetrics(DialTasksProcessed=5, DialTasksSuccessful=5, CurrentCPS=14))

    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    points.setdefault(metric.name, []).append(
                        (dict(point.attributes or {}), point.value)
                    )
    # Instrument names are case-insensitive in OpenTelemetry; the SDK reports them lower-cased.
    assert set(points) == {name.lower() for name in METRIC_NAMES}
    assert points["dialtasksprocessed"] == [({"service": "dialer-worker"}, 15)]
    assert points["dialtaskssuccessful"] == [({"service": "dialer-worker"}, 14)]
    assert points["currentcps"] == [({"service": "dialer-worker"}, 14)]


def test_batch_metrics_refuse_negative_counts() -> None:
    with pytest.raises(ValueError, match="DialTasksFailed"):
        BatchMetrics(DialTasksFailed=-1)


# -- traces -------------------------------------------------------------------------------------


@pytest.fixture
def traced(recording_worker: RecordingWorker, tmp_path: Path) -> list[dict[str, Any]]:
    """The spans of a batch of three, run with the SDK installed in a process of its own."""
    spans_file = tmp_path / "spans.json"
    subprocess.run(
        [sys.executable, "-m", "tests.support.trace_probe", recording_worker.url, str(spans_file)],
        input=json.dumps(make_batch(3)),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    spans: list[dict[str, Any]] = json.loads(spans_file.read_text())
    return spans


def _named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["name"] == name]


def test_with_tracing_on_each_dial_carries_a_traceparent_of_its_own_span(
    traced: list[dict[str, Any]], recording_worker: RecordingWorker
) -> None:
    traceparents = recording_worker.headers("traceparent")

    assert len(traceparents) == 3
    assert all(TRACEPARENT.fullmatch(value) for value in traceparents)
    assert {value.split("-")[2] for value in traceparents} == {
        span["id"] for span in _named(traced, "dialer.dial")
    }


def test_each_dial_is_a_span_under_the_batch_span(traced: list[dict[str, Any]]) -> None:
    [batch] = _named(traced, "dialer.batch")
    dials = _named(traced, "dialer.dial")

    assert len(dials) == 3
    assert all(dial["parent"] == batch["id"] for dial in dials)
    assert {dial["attributes"]["dialer.outcome"] for dial in dials} == {"successful"}
    assert batch["attributes"]["dialer.successful"] == 3


def test_the_limiter_span_nests_under_the_permits_span_that_each_dial_links_to(
    traced: list[dict[str, Any]],
) -> None:
    # One limiter call serves the whole batch, so it cannot sit under any one dial: it sits
    # under the batch's permits span, and every dial it granted links to that span.
    [batch] = _named(traced, "dialer.batch")
    [permits] = _named(traced, "dialer.permits")
    [acquire] = _named(traced, "cps_limiter.acquire")

    assert permits["parent"] == batch["id"]
    assert acquire["parent"] == permits["id"]
    assert all(dial["links"] == [permits["id"]] for dial in _named(traced, "dialer.dial"))


@pytest.mark.parametrize("strategy", ["paced", "fixed", "sliding", "token"])
def test_current_cps_counts_the_calls_sent_whatever_the_strategy(
    make_dialer: MakeDialer, lines: Lines, strategy: str
) -> None:
    dialer = make_dialer(MAX_CPS="50", CPS_STRATEGY=strategy)

    dialer.process(make_batch(3), FakeContext())

    # Three calls, in one second or across a boundary. A token bucket's limit less its
    # remaining burst read about 50 here, whatever was sent.
    [emf] = lines.emf()
    assert 1 <= emf["CurrentCPS"] <= 3
