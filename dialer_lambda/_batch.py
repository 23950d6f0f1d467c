"""One batch of dial tasks, from the pipe's event to the result the pipe reads back.

The order of the steps is the design:

1. validate each task and apply the campaign gates (no Redis, no network);
2. claim every remaining task in one pipelined round trip, so that a redelivered task is a
   duplicate before it costs a permit;
3. take permits for the whole batch (``permits=N, partial=True``), waiting for the next slots
   within the budget, and hand each granted task to the dial pool at once;
4. release, in one more round trip, the claims of tasks that surely never reached the worker,
   so that their retry may dial.

A Redis that cannot be reached costs neither the batch nor the calls (fail-open, as the seed
asks) unless ``CPS_FAIL_MODE=closed``, in which case nothing is dialed and every task comes back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypedDict

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from cps_limiter import BackendUnavailable, Decision, Limiter, RateLimitExceeded

from ._config import Settings
from ._idempotency import BACKEND_ERRORS, ClaimStore
from ._logging import LOGGER_NAME, mask_phone
from ._metrics import BatchMetrics, MetricsRecorder
from ._tasks import DialTask, InvalidTask, message_id_of, parse_task, reported
from ._version import __version__
from ._worker import DialOutcome, DialStatus, WorkerClient

# Time kept back from the Lambda's remaining time when waiting for permits: a dial granted at
# the end of the wait still gets its full timeout, and the result still gets out.
SAFETY_MARGIN_SECONDS: Final = 1.0
NOT_GRANTED_ERROR: Final = "no CPS permit within the wait budget"
FAIL_CLOSED_ERROR: Final = "Redis unavailable and CPS_FAIL_MODE=closed: not dialed"

logger = logging.getLogger(LOGGER_NAME)
tracer = trace.get_tracer(LOGGER_NAME, __version__)


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


class TaskStatus(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    RATE_LIMITED = "rateLimited"
    DUPLICATE = "duplicates"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What became of one task; ``retry`` puts it in ``batchItemFailures``."""

    status: TaskStatus
    error: str | None = None
    retry: bool = False

    def __post_init__(self) -> None:
        if self.status is TaskStatus.FAILED and not self.error:
            raise ValueError("a failed task needs an error")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def wait_budget(settings: Settings, context: Any) -> float:
    """Seconds the batch may wait for permits: the setting, but never past the Lambda's
    remaining time less a dial timeout and a margin."""
    budget = settings.rate_limit_max_wait
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        left = float(remaining()) / 1000.0
        budget = min(budget, left - settings.dial_timeout - SAFETY_MARGIN_SECONDS)
    return max(0.0, budget)


@dataclass(frozen=True, slots=True)
class Dialer:
    """Everything a batch needs, built once per container and shared by all invocations.

    Holds no per-batch state, so concurrent invocations in one process (the simulation runs
    many in threads) are safe: the Redis and HTTP clients and the pool are thread-safe.
    """

    settings: Settings
    limiter: Limiter
    claims: ClaimStore
    worker: WorkerClient
    executor: ThreadPoolExecutor
    metrics: MetricsRecorder
    clock: Callable[[], datetime] = field(default=_utc_now)

    def process(self, event: Any, context: Any = None) -> BatchResult:
        """Handle one event of the pipe; see the module's docstring."""
        if not isinstance(event, list):
            hint = (
                " (an SQS event with 'Records': the dialer expects the pipe's batch, a bare list)"
                if isinstance(event, dict) and "Records" in event
                else ""
            )
            raise ValueError(
                f"event must be a JSON array of dial tasks, got {type(event).__name__}{hint}"
            )
        return _Batch(self, event, context).run()

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.worker.close()
        self.limiter.close()


class _Batch:
    """The state of one invocation; lives on the invoking thread (dials only read it)."""

    def __init__(self, dialer: Dialer, event: list[Any], context: Any) -> None:
        self.dialer = dialer
        self.settings = dialer.settings
        self.raw = event
        self.outcomes: list[TaskOutcome | None] = [None] * len(event)
        self.tasks: dict[int, DialTask] = {}
        self.claimed: dict[int, str] = {}
        self.to_release: list[str] = []
        self.decisions: list[Decision] = []
        self.redis_unavailable = 0
        self.limiter_down = False
        self.worker_requests = 0
        self.worker_http_errors = 0
        self.request_id = str(getattr(context, "aws_request_id", "") or "local")
        self.budget = wait_budget(self.settings, context)
        # Measured from the start of the batch: validation and claims spend the same budget.
        self.deadline = time.monotonic() + self.budget

    def run(self) -> BatchResult:
        started = time.monotonic()
        with tracer.start_as_current_span(
            "dialer.batch", attributes={"dialer.batch_size": len(self.raw)}
        ) as span:
            logger.info(
                "batch start",
                extra={
                    "event": "batch_start",
                    "batchSize": len(self.raw),
                    "requestId": self.request_id,
                    "waitBudgetSeconds": round(self.budget, 3),
                },
            )
            ready = self._claim(self._validate())
            self._dial(ready)
            self._release()
            result = self._result()
            self._report(result, span, time.monotonic() - started)
        self._raise_if_unreportable()
        return result

    # -- steps -----------------------------------------------------------------------------

    def _validate(self) -> list[int]:
        now = self.dialer.clock()
        ready: list[int] = []
        for index, raw in enumerate(self.raw):
            try:
                task = parse_task(raw)
            except InvalidTask as error:
                # Retried on purpose: an invalid task is nobody's to drop, so it goes round the
                # queue until its redrive policy moves it to the dead-letter queue.
                self._finish(index, TaskStatus.FAILED, str(error), retry=True)
                logger.warning(
                    str(error),
                    extra={"event": "invalid_task", "index": index, **self._ids(index)},
                )
                continue
            reason = task.gate(now)
            if reason is not None:
                # Not retried: the campaign said no, and asking again soon will not change it.
                self._finish(index, TaskStatus.FAILED, reason)
                logger.info(
                    reason, extra={"event": "dial_failure", "dialed": False, **self._ids(index)}
                )
                continue
            self.tasks[index] = task
            ready.append(index)
        return ready

    def _claim(self, ready: list[int]) -> list[int]:
        keys = [
            self.dialer.claims.key(task.campaign_id, task.contact_id, task.attempts)
            for task in (self.tasks[index] for index in ready)
        ]
        owner = f"{self.request_id}@{time.time_ns() // 1_000_000}"
        try:
            fresh = self.dialer.claims.claim(keys, owner)
        except BACKEND_ERRORS as error:
            self.redis_unavailable += 1
            if self.settings.fail_mode == "closed":
                logger.error(
                    "Redis unavailable for idempotency claims; not dialing (fail closed)",
                    extra={
                        "event": "redis_unavailable",
                        "operation": "claim",
                        "error": repr(error),
                    },
                )
                for index in ready:
                    self._finish(index, TaskStatus.RATE_LIMITED, FAIL_CLOSED_ERROR, retry=True)
                return []
            # Fail open, as for the rate limit: a Redis outage must not stop the calls. The cost
            # is that a batch redelivered during the outage may dial again.
            logger.warning(
                "Redis unavailable for idempotency claims; dialing without them",
                extra={"event": "redis_unavailable", "operation": "claim", "error": repr(error)},
            )
            return ready
        claimed: list[int] = []
        for index, key, new in zip(ready, keys, fresh, strict=True):
            if new:
                self.claimed[index] = key
                claimed.append(index)
            else:
                self._finish(index, TaskStatus.DUPLICATE)
                logger.info(
                    "task already dialed or being dialed; skipped",
                    extra={"event": "duplicate_task", **self._ids(index)},
                )
        return claimed

    def _dial(self, ready: Sequence[int]) -> None:
        pending = deque(ready)
        parent = otel_context.get_current()
        dials: list[tuple[int, Future[DialOutcome]]] = []
        while pending:
            granted, link = self._permits(len(pending), max(0.0, self.deadline - time.monotonic()))
            if granted == 0:
                break
            # Each granted task goes to the pool now, while the loop waits for the next slots.
            for _ in range(min(granted, len(pending))):
                index = pending.popleft()
                future = self.dialer.executor.submit(self._dial_one, index, parent, link)
                dials.append((index, future))
        for index in pending:
            self._not_granted(index)
        for index, future in dials:
            self._dialed(index, future.result())

    def _permits(self, wanted: int, max_wait: float) -> tuple[int, Link | None]:
        """One limiter call for every task still waiting; how many it granted."""
        with tracer.start_as_current_span(
            "dialer.permits",
            attributes={"dialer.permits.requested": wanted, "dialer.permits.max_wait": max_wait},
        ) as span:
            try:
                decision = self.dialer.limiter.acquire(
                    permits=wanted, partial=True, max_wait=max_wait
                )
            except BackendUnavailable as error:
                self.redis_unavailable += 1
                self.limiter_down = True
                logger.error(
                    "Redis unavailable for the CPS limit; not dialing (fail closed)",
                    extra={
                        "event": "redis_unavailable",
                        "operation": "acquire",
                        "error": str(error),
                    },
                )
                return 0, None
            span.set_attribute("dialer.permits.granted", decision.granted)
            link = Link(span.get_span_context())
        self.decisions.append(decision)
        logger.info(
            "CPS check",
            extra={
                "event": "cps_check",
                "requested": wanted,
                "granted": decision.granted,
                "limit": decision.limit,
                "remaining": decision.remaining,
                "waitedSeconds": round(decision.waited, 3),
                "retryAfterSeconds": round(decision.retry_after, 3),
                "failOpen": decision.fail_open,
            },
        )
        if decision.fail_open:
            self.redis_unavailable += 1
            logger.warning(
                "Redis unavailable for the CPS limit; dialing without it (fail open)",
                extra={"event": "redis_unavailable", "operation": "acquire"},
            )
        return decision.granted, link

    def _dial_one(self, index: int, parent: otel_context.Context, link: Link | None) -> DialOutcome:
        """Runs on a pool thread: the span's parent is passed in, as contextvars do not follow
        work into a ThreadPoolExecutor."""
        task = self.tasks[index]
        call_id = f"call-{task.campaign_id}-{task.contact_id}-{time.time_ns() // 1_000_000}"
        command = {
            "callId": call_id,
            "phoneNumber": task.phone_number,
            "campaignId": task.campaign_id,
            "contactId": task.contact_id,
            "audioFileUrl": task.audio_file_url,
            "ivrFlow": task.ivr_flow,
            "metadata": task.metadata,
        }
        with tracer.start_as_current_span(
            "dialer.dial",
            context=parent,
            kind=SpanKind.CLIENT,
            links=[link] if link is not None else None,
            attributes={
                "dialer.call_id": call_id,
                "dialer.campaign_id": task.campaign_id,
                "dialer.contact_id": task.contact_id,
                "dialer.attempts": task.attempts,
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)  # traceparent, when an SDK records this span
            started = time.monotonic()
            try:
                outcome = self.dialer.worker.dial(command, headers)
            except Exception as error:
                # A bug must cost one task, not the batch; the call may have gone out, so no
                # retry and the claim stays.
                logger.exception("dial raised", extra={"event": "dial_failure", **self._ids(index)})
                outcome = DialOutcome(DialStatus.FAILED, f"internal error: {type(error).__name__}")
            span.set_attribute("dialer.outcome", str(outcome.status))
            if outcome.http_status is not None:
                span.set_attribute("http.response.status_code", outcome.http_status)
            if outcome.status is not DialStatus.SUCCESSFUL:
                span.set_status(Status(StatusCode.ERROR, outcome.error))
            self._log_dial(index, call_id, outcome, time.monotonic() - started)
        return outcome

    def _dialed(self, index: int, outcome: DialOutcome) -> None:
        self.worker_requests += 1
        self.worker_http_errors += outcome.worker_error
        if not outcome.reached_worker and index in self.claimed:
            self.to_release.append(self.claimed[index])
        self._finish(index, TaskStatus(outcome.status), outcome.error, retry=outcome.retry)

    def _not_granted(self, index: int) -> None:
        if index in self.claimed:
            self.to_release.append(self.claimed[index])
        if self.outcomes[index] is None:
            error = FAIL_CLOSED_ERROR if self.limiter_down else NOT_GRANTED_ERROR
            self._finish(index, TaskStatus.RATE_LIMITED, error, retry=True)
            logger.warning(
                f"rate limited, back to the queue: {error}",
                extra={
                    "event": "rate_limited",
                    "waitBudgetSeconds": round(self.budget, 3),
                    **self._ids(index),
                },
            )

    def _release(self) -> None:
        if not self.to_release:
            return
        try:
            self.dialer.claims.release(self.to_release)
        except BACKEND_ERRORS as error:
            self.redis_unavailable += 1
            # Safe but costly: the retried tasks will count as duplicates until the claims
            # expire, so they are not called (rather than possibly called twice).
            logger.error(
                "could not release idempotency claims; retried tasks will be skipped as "
                "duplicates until the claims expire",
                extra={
                    "event": "redis_unavailable",
                    "operation": "release",
                    "claims": len(self.to_release),
                    "error": repr(error),
                },
            )

    # -- results -----------------------------------------------------------------------------

    def _finish(
        self, index: int, status: TaskStatus, error: str | None = None, *, retry: bool = False
    ) -> None:
        self.outcomes[index] = TaskOutcome(status, error, retry)

    def _ids(self, index: int) -> dict[str, Any]:
        raw = self.raw[index]
        phone = reported(raw, "phoneNumber")
        return {
            "campaignId": reported(raw, "campaignId"),
            "contactId": reported(raw, "contactId"),
            "phoneNumber": None if phone is None else mask_phone(phone),
            "messageId": message_id_of(raw),
        }

    def _log_dial(self, index: int, call_id: str, outcome: DialOutcome, seconds: float) -> None:
        fields = {
            "callId": call_id,
            "durationMs": round(seconds * 1000, 1),
            "httpStatus": outcome.http_status,
            **self._ids(index),
        }
        if outcome.status is DialStatus.SUCCESSFUL:
            logger.info("dial command sent", extra={"event": "dial_success", **fields})
        elif outcome.status is DialStatus.RATE_LIMITED:
            logger.warning(outcome.error, extra={"event": "rate_limited", "retry": True, **fields})
        elif outcome.worker_error:
            logger.error(
                outcome.error, extra={"event": "worker_error", "retry": outcome.retry, **fields}
            )
        else:
            logger.warning(outcome.error, extra={"event": "dial_failure", "retry": False, **fields})

    def _result(self) -> BatchResult:
        counts = dict.fromkeys(TaskStatus, 0)
        errors: list[BatchError] = []
        failures: list[BatchItemFailure] = []
        seen: set[str] = set()
        for index, outcome in enumerate(self.outcomes):
            if outcome is None:  # pragma: no cover - every path finishes every task
                raise RuntimeError(f"task {index} was never accounted for")
            counts[outcome.status] += 1
            raw = self.raw[index]
            if outcome.status is TaskStatus.FAILED:
                errors.append(
                    BatchError(
                        contactId=reported(raw, "contactId"),
                        phoneNumber=reported(raw, "phoneNumber"),
                        error=outcome.error or "",
                    )
                )
            message_id = message_id_of(raw)
            if outcome.retry and message_id is not None and message_id not in seen:
                seen.add(message_id)
                failures.append(BatchItemFailure(itemIdentifier=message_id))
        return BatchResult(
            totalProcessed=len(self.outcomes),
            successful=counts[TaskStatus.SUCCESSFUL],
            failed=counts[TaskStatus.FAILED],
            rateLimited=counts[TaskStatus.RATE_LIMITED],
            duplicates=counts[TaskStatus.DUPLICATE],
            errors=errors,
            batchItemFailures=failures,
        )

    def _report(self, result: BatchResult, span: trace.Span, seconds: float) -> None:
        measured = [d.limit - d.remaining for d in self.decisions if not d.fail_open]
        self.dialer.metrics.record(
            BatchMetrics(
                DialTasksProcessed=result["totalProcessed"],
                DialTasksSuccessful=result["successful"],
                DialTasksFailed=result["failed"],
                DialTasksRateLimited=result["rateLimited"],
                DialTasksDuplicate=result["duplicates"],
                CurrentCPS=max(measured, default=0),
                RedisUnavailable=self.redis_unavailable,
                WorkerRequests=self.worker_requests,
                WorkerHttpErrors=self.worker_http_errors,
            )
        )
        counts = {
            "successful": result["successful"],
            "failed": result["failed"],
            "rateLimited": result["rateLimited"],
            "duplicates": result["duplicates"],
        }
        for key, value in counts.items():
            span.set_attribute(f"dialer.{key}", value)
        logger.info(
            "batch end",
            extra={
                "event": "batch_end",
                "requestId": self.request_id,
                "totalProcessed": result["totalProcessed"],
                **counts,
                "retried": sum(1 for o in self.outcomes if o is not None and o.retry),
                "durationMs": round(seconds * 1000, 1),
                "redisUnavailable": self.redis_unavailable,
            },
        )

    def _raise_if_unreportable(self) -> None:
        """The seed's behaviour, kept for tasks the pipe cannot match: a retried task without a
        messageId can only come back with the whole batch, so the invocation fails (after its
        granted dials went out; the claims make their redelivery harmless)."""
        orphans = sum(
            1
            for index, outcome in enumerate(self.outcomes)
            if outcome is not None and outcome.retry and message_id_of(self.raw[index]) is None
        )
        if not orphans:
            return
        denied = [decision for decision in self.decisions if decision.granted == 0]
        decision = (
            denied[-1]
            if denied
            else Decision(
                allowed=False,
                granted=0,
                limit=self.decisions[-1].limit if self.decisions else self.settings.max_cps,
                remaining=self.decisions[-1].remaining if self.decisions else 0,
                retry_after=0.0,
                reset_after=0.0,
            )
        )
        raise RateLimitExceeded(
            decision,
            f"{orphans} task(s) must be retried but carry no messageId for batchItemFailures; "
            "failing the invocation so that the whole batch is redelivered",
        )
