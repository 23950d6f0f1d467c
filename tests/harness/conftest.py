"""Fixtures of the harness's tests: a worker stub in this process and a client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loadtest.worker_stub import WorkerStub
from tests.support.stub import CLIENT_TIMEOUT_SECONDS


@pytest.fixture
def stub() -> Iterator[WorkerStub]:
    with WorkerStub() as server:
        yield server


@pytest.fixture
def client(stub: WorkerStub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stub.url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        yield http
