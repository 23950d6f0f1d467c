"""The seed's example dial task, verbatim but for its "..." placeholders: one copy for the
simulation, the load test and the tests."""

from __future__ import annotations

import copy
from typing import Any, Final

_SEED_TASK: Final[dict[str, Any]] = {
    "campaignId": "campaign-123",
    "contactId": "contact-456",
    "phoneNumber": "+972501234567",
    "metadata": {"firstName": "John", "lastName": "Doe"},
    "attempts": 0,
    "campaign": {
        "id": "campaign-123",
        "name": "Donation Drive 2024",
        "type": "voice",
        "status": "active",
        "config": {
            "audioFileUrl": "https://s3.amazonaws.com/bucket/audio.mp3",
            "ivrFlow": {"nodes": [{"id": "node-1", "type": "play"}], "startNodeId": "node-1"},
            "callingWindows": [],
            "maxConcurrentCalls": 100,
        },
        "timezone": "Asia/Jerusalem",
    },
    "enrichedAt": "2024-01-15T10:30:00.000Z",
}


def seed_task() -> dict[str, Any]:
    """A fresh deep copy of the seed's example task (calling windows empty: dial any time)."""
    return copy.deepcopy(_SEED_TASK)
