"""Helpers for the worker stub's tests: a dial command with the seed's keys."""

from __future__ import annotations

from typing import Any

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
