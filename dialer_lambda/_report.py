"""What became of a batch: the result the pipe reads back, the metrics, the batch-end log line
and span attributes, and the one case where the invocation must fail instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from opentelemetry import trace

from cps_limiter import Decision, RateLimitExceeded

from ._logging import log_event
from ._metrics import BatchMetrics
from ._outcome import TaskStatus
from ._tally import counts_in_decisions, tallied
from ._worker import BUSY_STATUSES

if TYPE_CHECKING:
    from ._invocation import Invocation, Parts
    from ._ledger import Ledger


class BatchError(TypedDict):
    contactId: str | None
    phoneNumber: str | None
    error: str


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class BatchResult(TypedDict):
    totalProcessed: int
    successful: int
    failed: int
    rateLimited: int
    duplicates: int
    errors: list[BatchError]
    batchItemFailures: list[BatchItemFailure]


def result_of(ledger: Ledger) -> BatchResult:
    """The result; a messageId retried by two tasks is listed once."""
    counts = dict.fromkeys(TaskStatus, 0)
    errors: list[BatchError] = []
    failures: dict[str, BatchItemFailure] = {}
    for outcome, record in zip(ledger.outcomes(), ledger.records, strict=True):
        reported = record.reported
        counts[outcome.status] += 1
        if outcome.status is TaskStatus.FAILED:
            errors.append(
                BatchError(
                    contactId=reported.contact_id,
                    phoneNumber=reported.phone_number,
                    error=outcome.error or "",
                )
            )
        if outcome.retry and reported.message_id is not None:
            failures.setdefault(reported.message_id, {"itemIdentifier": reported.message_id})
    return BatchResult(
        totalProcessed=len(ledger),
        successful=counts[TaskStatus.SUCCESSFUL],
        failed=counts[TaskStatus.FAILED],
        rateLimited=counts[TaskStatus.RATE_LIMITED],
        duplicates=counts[TaskStatus.DUPLICATE],
        errors=errors,
        batchItemFailures=list(failures.values()),
    )


def report(
    ledger: Ledger,
    parts: Parts,
    invocation: Invocation,
    result: BatchResult,
    span: trace.Span,
    seconds: float,
) -> None:
    """The batch's EMF line and OpenTelemetry metrics, span attributes and ``batch_end`` line."""
    measured = (
        [d.limit - d.remaining for d in ledger.decisions if not d.fail_open]
        if counts_in_decisions(parts.limiter)
        else tallied(parts.limiter, parts.settings.cps_key_prefix, ledger.sent_seconds)
    )
    dialed = [record.dialed for record in ledger.records if record.dialed is not None]
    parts.metrics.record(
        BatchMetrics(
            DialTasksProcessed=result["totalProcessed"],
            DialTasksSuccessful=result["successful"],
            DialTasksFailed=result["failed"],
            DialTasksRateLimited=result["rateLimited"],
            DialTasksDuplicate=result["duplicates"],
            CurrentCPS=max(measured, default=0),
            RedisUnavailable=ledger.redis_unavailable,
            WorkerRequests=len(dialed),
            WorkerHttpErrors=sum(outcome.worker_error for outcome in dialed),
            LeasesExpired=ledger.leases_expired,
            WorkerRefusals=sum(outcome.http_status in BUSY_STATUSES for outcome in dialed),
            LimitInForce=next((d.limit for d in reversed(ledger.decisions) if not d.fail_open), 0),
        )
    )
    figures: Mapping[str, Any] = result
    counts = {status.value: figures[status.value] for status in TaskStatus}
    for key, value in counts.items():
        span.set_attribute(f"dialer.{key}", value)
    log_event(
        logging.INFO,
        "batch_end",
        "batch end",
        requestId=invocation.request_id,
        totalProcessed=result["totalProcessed"],
        **counts,
        retried=sum(outcome.retry for outcome in ledger.outcomes()),
        durationMs=round(seconds * 1000, 1),
        redisUnavailable=ledger.redis_unavailable,
    )


def raise_if_unreportable(ledger: Ledger, event: list[Any], max_cps: int) -> None:
    """The seed's behaviour, kept for tasks the pipe cannot match: a retried task without a
    messageId can only come back with the whole batch, so the invocation fails (after its
    granted dials went out; the claims make their redelivery harmless)."""
    orphans = sum(
        outcome.retry and record.reported.message_id is None
        for outcome, record in zip(ledger.outcomes(), ledger.records, strict=True)
    )
    if not orphans:
        return
    strays = [index for index, raw in enumerate(event) if not isinstance(raw, Mapping)]
    if strays:
        # Not a rate limit: the event itself is malformed, and the error must say where.
        kinds = ", ".join(f"event[{i}] is {type(event[i]).__name__}" for i in strays)
        raise ValueError(
            f"every item of the event must be a JSON object (a dial task): {kinds}; the other "
            "tasks were processed, and the whole batch comes back"
        )
    denied = [decision for decision in ledger.decisions if decision.granted == 0]
    last = ledger.decisions[-1] if ledger.decisions else None
    limit, remaining = (last.limit, last.remaining) if last else (max_cps, 0)
    nothing = Decision(
        False, granted=0, limit=limit, remaining=remaining, retry_after=0, reset_after=0
    )
    decision = denied[-1] if denied else nothing
    raise RateLimitExceeded(
        decision,
        f"{orphans} task(s) must be retried but carry no messageId for batchItemFailures; "
        "failing the invocation so that the whole batch is redelivered",
    )
