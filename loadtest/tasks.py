"""Dial tasks for the simulation, the load test and the tests.

`seed_task` is the seed's example task, verbatim but for its "..." placeholders; `TaskFactory`
makes tasks unique per process as the load test sends them; `make_tasks` makes the simulated
campaign, reproducible from a seed and with a share of invalid phone numbers.
"""

from __future__ import annotations

import copy
import itertools
import os
import random
import uuid
from datetime import UTC, datetime
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

PHONE_DIGITS: Final = 8
BATCH: Final = 10
"""Tasks per batch: the pipe's SQS batch size in the seed."""
SCENARIOS: Final = ("fixed", "sliding", "token", "dialer")
"""The load test's scenarios: one per limiter strategy, and the dialer's handler."""
DEFAULT_INVALID_RATE: Final = 0.01


def seed_task(*, limits: bool = True) -> dict[str, Any]:
    """A fresh deep copy of the seed's example task, ``maxConcurrentCalls`` included (calling
    windows empty: dial any time). The dialer takes leases for it only with
    ``WORKER_FREES_LEASES=true``; ``limits=False`` leaves it out, for runs that turn leases on
    and share one campaign."""
    task = copy.deepcopy(_SEED_TASK)
    if not limits:
        del task["campaign"]["config"]["maxConcurrentCalls"]
    return task


SEED_TASK: Final[dict[str, Any]] = seed_task()


class TaskFactory:
    """Makes tasks whose contact ids never repeat within this process (nor across processes,
    thanks to a random run id), each with its own messageId."""

    def __init__(self, run_id: str | None = None, campaign_id: str | None = None) -> None:
        self.run_id = run_id or f"{uuid.uuid4().hex[:8]}-{os.getpid()}"
        self.campaign_id = campaign_id
        self._counter = itertools.count()

    def task(self) -> dict[str, Any]:
        number = next(self._counter)
        task = copy.deepcopy(SEED_TASK)
        task["contactId"] = f"contact-{self.run_id}-{number}"
        task["phoneNumber"] = f"+9725{number % 10**PHONE_DIGITS:0{PHONE_DIGITS}d}"
        task["messageId"] = f"m-{self.run_id}-{number}"
        if self.campaign_id is not None:
            task["campaignId"] = task["campaign"]["id"] = self.campaign_id
        return task

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.task() for _ in range(size)]


def make_tasks(
    count: int,
    *,
    seed: int,
    run_id: str,
    invalid_rate: float = DEFAULT_INVALID_RATE,
    enriched_at: datetime | None = None,
    campaigns: int = 1,
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Enriched dial tasks as the seed shows them, each with its own SQS message id.

    Every task is a distinct (campaignId, contactId, attempts); `invalid_rate` of them carry a
    phone number in local format instead of E.164, which the handler must refuse. With
    several ``campaigns`` the tasks are dealt to them in turn (ids ``...-<k>``); ``config``
    is added to each campaign's config (``maxConcurrentCalls``, ``maxCps``).
    """
    rng = random.Random(seed)
    invalid = set(rng.sample(range(count), round(count * invalid_rate)))
    subscribers = rng.sample(range(10**PHONE_DIGITS), count)
    dealt = []
    for k in range(campaigns):
        campaign_id = f"campaign-sim-{run_id}" + (f"-{k}" if campaigns > 1 else "")
        campaign = seed_task()["campaign"]
        campaign.update(id=campaign_id, name="Simulated Donation Drive")
        campaign["config"].update(config or {})
        dealt.append(campaign)
    stamp = (enriched_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    enriched = stamp.replace("+00:00", "Z")
    tasks = []
    for index, subscriber in enumerate(subscribers):
        local = f"{subscriber:0{PHONE_DIGITS}d}"
        phone = f"05{local}" if index in invalid else f"+9725{local}"
        campaign = dealt[index % campaigns]
        tasks.append(
            {
                "messageId": f"msg-{run_id}-{index:06d}",
                "campaignId": campaign["id"],
                "contactId": f"contact-{index:06d}",
                "phoneNumber": phone,
                "metadata": {"firstName": f"Donor{index}", "lastName": "Sim"},
                "attempts": 0,
                "campaign": campaign,
                "enrichedAt": enriched,
            }
        )
    return tasks
