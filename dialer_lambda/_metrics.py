"""Per-batch metrics: one CloudWatch embedded-metric-format line, and the OpenTelemetry API.

EMF needs no agent and no API call from the Lambda (CloudWatch extracts the metrics from the
log line), so it costs nothing on the hot path. The same figures go to the OpenTelemetry
metrics API for deployments that export OTLP instead; without an SDK those calls are no-ops.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Final

from opentelemetry import metrics

from ._logging import write_line
from ._version import __version__

NAMESPACE: Final = "DialerWorker"
METER_NAME: Final = "dialer_lambda"
SERVICE_DIMENSION: Final = "service"
COUNT: Final = "Count"
COUNT_PER_SECOND: Final = "Count/Second"


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """The figures of one batch, named as on the dashboards and alarms."""

    DialTasksProcessed: int = 0
    DialTasksSuccessful: int = 0
    DialTasksFailed: int = 0
    DialTasksRateLimited: int = 0
    DialTasksDuplicate: int = 0
    CurrentCPS: int = 0
    RedisUnavailable: int = 0
    WorkerRequests: int = 0
    WorkerHttpErrors: int = 0
    LeasesExpired: int = 0
    WorkerRefusals: int = 0
    """Dials the worker answered 429 or 503, reported to the limit's AIMD."""
    LimitInForce: int = 0
    """The limit in force at the batch's last decision: MAX_CPS, or less after refusals, a cap
    or a health report."""

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) < 0:
                raise ValueError(f"{item.name} must not be negative")


UNITS: Final = {item.name: COUNT for item in fields(BatchMetrics)} | {
    "CurrentCPS": COUNT_PER_SECOND,
    "LimitInForce": COUNT_PER_SECOND,
}
GAUGES: Final = frozenset({"CurrentCPS", "LimitInForce"})


def emf_record(batch: BatchMetrics, service: str, timestamp_ms: int) -> dict[str, object]:
    """The EMF object for one batch (namespace DialerWorker, dimension ``service``)."""
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[SERVICE_DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in UNITS.items()],
                }
            ],
        },
        SERVICE_DIMENSION: service,
        **asdict(batch),
    }


class MetricsRecorder:
    """Writes each batch's EMF line to stdout and records it through OpenTelemetry.

    Instruments are made once: the API hands out proxies that start recording as soon as an
    application installs an SDK, even after this object was made.
    """

    def __init__(self, service: str, meter: metrics.Meter | None = None) -> None:
        self._service = service
        self._attributes = {SERVICE_DIMENSION: service}
        meter = meter or metrics.get_meter(METER_NAME, __version__)
        self._counters = {
            name: meter.create_counter(name, unit=unit)
            for name, unit in UNITS.items()
            if name not in GAUGES
        }
        self._gauges = {name: meter.create_gauge(name, unit=UNITS[name]) for name in GAUGES}

    def record(self, batch: BatchMetrics) -> None:
        write_line(
            json.dumps(
                emf_record(batch, self._service, time.time_ns() // 1_000_000),
                separators=(",", ":"),
            )
        )
        for name, value in asdict(batch).items():
            if name in self._gauges:
                self._gauges[name].set(value, self._attributes)
            else:
                self._counters[name].add(value, self._attributes)
