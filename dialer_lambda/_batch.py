"""One batch of dial tasks, from the pipe's event to the result the pipe reads back.

The order of the steps is the design:

1. validate each task and apply the campaign gates, with no Redis and no network (`_validate`);
2. claim every remaining task in one pipelined round trip, so that a redelivered task is a
   duplicate before it costs a permit (`_claims`);
3. take permits for the whole batch (``permits=N, partial=True``), waiting for the next slots
   within the budget, and hand each granted task to the dial pool at once (`_dial`);
4. release, in one more round trip, the claims of tasks that surely never reached the worker,
   so that their retry may dial (`_release`);
5. build the result, record the metrics and log the batch's end (`_report`).

A Redis that cannot be reached costs neither the batch nor the calls (fail-open, as the seed
asks) unless ``CPS_FAIL_MODE=closed``, in which case nothing is dialed and every task comes back.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace

from cps_limiter import Decision

from ._claims import claim
from ._config import Settings
from ._dial import dial
from ._logging import LOGGER_NAME, log_event
from ._release import release
from ._report import BatchResult, TaskOutcome, TaskStatus, raise_if_unreportable, report, result_of
from ._tasks import DialTask, Reported
from ._validate import validate
from ._version import __version__
from ._worker import DialOutcome

if TYPE_CHECKING:
    from ._dialer import Dialer

# Time kept back from the Lambda's remaining time when waiting for permits: a dial granted at
# the end of the wait still gets its full timeout, and the result still gets out.
SAFETY_MARGIN_SECONDS: Final = 1.0
# Time kept back from the Lambda's deadline when dialing: the claims of tasks that never reached
# the worker are released, and the result returned, before Lambda ends the invocation.
DEADLINE_MARGIN_SECONDS: Final = 0.5

tracer = trace.get_tracer(LOGGER_NAME, __version__)


def time_left(context: Any) -> float | None:
    """Seconds until the invocation's deadline, when a Lambda context says."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return float(remaining()) / 1000.0 if callable(remaining) else None


def wait_budget(settings: Settings, context: Any) -> float:
    """Seconds the batch may wait for permits: the setting, but never past the Lambda's
    remaining time less a dial timeout and a margin."""
    budget = settings.rate_limit_max_wait
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        left = float(remaining()) / 1000.0
        budget = min(budget, left - settings.dial_timeout - SAFETY_MARGIN_SECONDS)
    return max(0.0, budget)


class Batch:
    """The state of one invocation, shared by its steps; lives on the invoking thread (dials
    only read it). Tasks are known by their index in the event."""

    def __init__(self, dialer: Dialer, event: list[Any], context: Any) -> None:
        self.dialer = dialer
        self.event = event
        self.reported = [Reported.of(raw) for raw in event]
        self.outcomes: list[TaskOutcome | None] = [None] * len(event)
        self.tasks: dict[int, DialTask] = {}
        self.claimed: dict[int, str] = {}
        self.dialed: dict[int, DialOutcome] = {}
        self.call_ids: dict[int, str] = {}
        """The callId of each task granted with a campaign limit: its lease's id."""
        self.leases: dict[int, tuple[str, str]] = {}
        """The lease (scope, id) each task took on its campaign's concurrency."""
        self.decisions: list[Decision] = []
        self.sent_seconds: list[int] = []
        """The unix second each dial left in (list.append is atomic: dials run on threads)."""
        self.redis_unavailable = 0
        self.request_id = str(getattr(context, "aws_request_id", "") or "local")
        started = time.monotonic()
        self.budget = wait_budget(dialer.settings, context)
        # Measured from the start of the batch: validation and claims spend the same budget.
        self.deadline = started + self.budget
        left = time_left(context)
        self.dials_end = math.inf if left is None else started + left - DEADLINE_MARGIN_SECONDS
        """No dial may still run after this (monotonic): each one's timeout is cut to it."""

    def finish(
        self, index: int, status: TaskStatus, error: str | None = None, *, retry: bool = False
    ) -> None:
        self.outcomes[index] = TaskOutcome(status, error, retry)

    def finished(self) -> list[TaskOutcome]:
        """Every task's outcome, in the event's order."""
        outcomes = [outcome for outcome in self.outcomes if outcome is not None]
        if len(outcomes) < len(self.outcomes):  # pragma: no cover - every step finishes its own
            raise RuntimeError("a task was never accounted for")
        return outcomes

    def log(self, level: int, event: str, message: str, *, task: int, **fields: Any) -> None:
        """A line about one task, with its ids and masked phone number."""
        log_event(level, event, message, **fields, **self.reported[task].log_fields())

    def redis_down(self, level: int, operation: str, message: str, **fields: Any) -> None:
        """Count a Redis failure for the metric and say what it cost."""
        self.redis_unavailable += 1
        log_event(level, "redis_unavailable", message, operation=operation, **fields)


def run(dialer: Dialer, event: list[Any], context: Any) -> BatchResult:
    """Take one batch through its steps; see the module's docstring."""
    started = time.monotonic()
    batch = Batch(dialer, event, context)
    with tracer.start_as_current_span(
        "dialer.batch", attributes={"dialer.batch_size": len(event)}
    ) as span:
        log_event(
            logging.INFO,
            "batch_start",
            "batch start",
            batchSize=len(event),
            requestId=batch.request_id,
            waitBudgetSeconds=round(batch.budget, 3),
        )
        dial(batch, claim(batch, validate(batch, event)))
        release(batch)
        result = result_of(batch)
        report(batch, result, span, time.monotonic() - started)
    raise_if_unreportable(batch)
    return result
