"""Fixtures of the reliability tests: the measured figures, latency measured on the limiter
alone, and a worker stub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.worker_stub import WorkerStub
from tests.support.measure import Report
from tests.support.telemetry import latency_on_the_limiter


@pytest.fixture(scope="session")
def fault_report() -> Iterator[Report]:
    """Collects the measurements; written as JSON to ``$RELIABILITY_REPORT`` when it is set."""
    report = Report()
    yield report
    target = os.environ.get("RELIABILITY_REPORT")
    if target:
        report.write(Path(target))


@pytest.fixture(scope="module")
def no_limiter_spans() -> Iterator[None]:
    """For a module that measures decision latency: see `latency_on_the_limiter`."""
    with latency_on_the_limiter():
        yield


@pytest.fixture
def stub() -> Iterator[WorkerStub]:
    """A worker stub on a free port, answering at once unless told otherwise."""
    with WorkerStub() as server:
        yield server
