"""Validate each task of the event and apply the campaign's gates: no Redis, no network."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ._campaigns import lease_id_problem
from ._ledger import Ledger
from ._tasks import InvalidTask, parse_task


def validate(ledger: Ledger, event: list[Any], now: datetime, *, leases: bool) -> list[int]:
    """The tasks that may be dialed now; every other task is ended here."""
    ready: list[int] = []
    for index, raw in enumerate(event):
        try:
            task = parse_task(raw)
            problem = lease_id_problem(task, leases)
            if problem is not None:
                raise InvalidTask([problem])
        except InvalidTask as error:
            ledger.invalid(index, str(error))
            ledger.log(logging.WARNING, "invalid_task", str(error), task=index, index=index)
            continue
        reason = task.gate(now)
        if reason is not None:
            # Not retried: the campaign said no, and asking again soon will not change it.
            ledger.gated(index, reason)
            ledger.log(logging.INFO, "dial_failure", reason, task=index, dialed=False)
            continue
        ledger.validated(index, task)
        ready.append(index)
    return ready
