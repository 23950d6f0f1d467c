"""Validate each task of the event and apply the campaign's gates: no Redis, no network."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._report import TaskStatus
from ._tasks import InvalidTask, parse_task

if TYPE_CHECKING:
    from ._batch import Batch


def validate(batch: Batch, event: list[Any]) -> list[int]:
    """The tasks that may be dialed now; every other task is finished here."""
    now = batch.dialer.clock()
    ready: list[int] = []
    for index, raw in enumerate(event):
        try:
            task = parse_task(raw)
        except InvalidTask as error:
            # Retried on purpose: an invalid task is nobody's to drop, so it goes round the
            # queue until its redrive policy moves it to the dead-letter queue.
            batch.finish(index, TaskStatus.FAILED, str(error), retry=True)
            batch.log(logging.WARNING, "invalid_task", str(error), task=index, index=index)
            continue
        reason = task.gate(now)
        if reason is not None:
            # Not retried: the campaign said no, and asking again soon will not change it.
            batch.finish(index, TaskStatus.FAILED, reason)
            batch.log(logging.INFO, "dial_failure", reason, task=index, dialed=False)
            continue
        batch.tasks[index] = task
        ready.append(index)
    return ready
