"""Dial tasks as the pipe delivers them, unique per run so that idempotency never skips one."""

from __future__ import annotations

import copy
import itertools
import os
import uuid
from typing import Any

from loadtest.example import seed_task

SEED_TASK: dict[str, Any] = seed_task()
PHONE_DIGITS = 8
BATCH = 10
"""Tasks per batch: the pipe's SQS batch size in the seed."""
SCENARIOS = ("fixed", "sliding", "token", "dialer")
"""The load test's scenarios: one per limiter strategy, and the dialer's handler."""


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
