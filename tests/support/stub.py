"""Fixtures for the worker stub and the simulation: a stub in this process and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loadtest.worker_stub import WorkerStub

CLIENT_TIMEOUT_SECONDS = 5.0


def dial_body(
    phone: str = "+972501234567", call_id: str = "call-c-1-1705318245000"
) -> dict[str, Any]:
    """A dial command with the seed's keys."""
    return {
        "callId": call_id,
        "phoneNumber": phone,
        "campaignId": "campaign-123",
        "contactId": "contact-456",
        "audioFileUrl": "https://s3.amazonaws.com/bucket/audio.mp3",
        "ivrFlow": {"nodes": [], "startNodeId": "node-1"},
        "metadata": {"firstName": "John", "lastName": "Doe"},
    }


@pytest.fixture
def stub() -> Iterator[WorkerStub]:
    with WorkerStub() as server:
        yield server


@pytest.fixture
def client(stub: WorkerStub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stub.url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        yield http
