"""Permits for the whole batch, and each granted task dialed on the pool at once.

One limiter call asks for every task still waiting (``permits=N, partial=True``) and may wait
for the next slots within the batch's budget; the tasks it grants go to the dial pool while the
loop asks for the rest. Each dial is a span of its own, linked to the permits span that granted
it, and its POST carries that span's ``traceparent``.
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from cps_limiter import BackendUnavailable, Decision, PacedWindow

from ._campaigns import Group, call_id_of, groups_of, take
from ._logging import LOGGER_NAME, log_event
from ._report import FAIL_CLOSED_ERROR, TOO_LATE_ERROR, TaskStatus
from ._version import __version__
from ._worker import DialOutcome, DialStatus

if TYPE_CHECKING:
    from ._batch import Batch

tracer = trace.get_tracer(LOGGER_NAME, __version__)
_BATCHES = itertools.count()


def dial(batch: Batch, ready: list[int]) -> None:
    """Dial what the limits allow within the budget; the rest is rate limited and retried.

    Tasks are grouped by campaign limits (`_campaigns`); while several groups wait, each asks
    in turn for its share of what is left, so that no campaign takes the whole trunk."""
    groups = groups_of(batch, ready)
    parent = otel_context.get_current()
    dials: list[tuple[int, Future[DialOutcome]]] = []
    # Each batch of several campaigns starts with another: the first to ask gets the first slot.
    turn = next(_BATCHES) % len(groups) if groups else 0
    waiting = groups[turn:] + groups[:turn]
    while waiting:
        share = _share(waiting)
        for group in list(waiting):
            # While Redis is down, one permit at a time: a local grant reaches one slot ahead,
            # so once Redis is back this container's next dial is under Redis's pace, not the
            # rest of a second of local slots on top of it.
            wanted = 1 if _redis_down(batch) else min(len(group.pending), share)
            asked = time.monotonic()
            left = batch.deadline - asked
            decision, link = _permits(batch, group, wanted, left)
            if decision is None:
                for other in waiting:
                    other.error = FAIL_CLOSED_ERROR
                waiting.clear()
                break
            if decision.granted == 0:
                waiting.remove(group)
                continue
            # A paced grant carries each permit's moment: each dial waits for its own, so that
            # the batch reaches the carrier spaced as granted, not at once. The moments count
            # from when the request left, the closest this clock knows to Redis's: a reply
            # handled late (a busy host) must not push the whole batch late, onto the slots
            # Redis gave the next container.
            first = asked + decision.waited
            moments = decision.schedule or (0.0,) * decision.granted
            spacing = _spacing(batch, decision)
            for moment in moments[: len(group.pending)]:
                index = group.pending.popleft()
                at = first + moment
                submit = batch.dialer.executor.submit
                dials.append((index, submit(_dial_one, batch, index, parent, link, at, spacing)))
            # With the budget spent, a short grant is the group's last: asking again at once
            # would only catch a window that happened to open since, a round trip on a chance.
            if not group.pending or (decision.granted < wanted and left <= 0):
                waiting.remove(group)
        # The next round starts with another group: the first to ask gets the earliest slots.
        waiting = waiting[1:] + waiting[:1]
    for group in groups:
        for index in group.pending:
            error = group.error
            batch.finish(index, TaskStatus.RATE_LIMITED, error, retry=True)
            message, budget = f"rate limited, back to the queue: {error}", round(batch.budget, 3)
            batch.log(
                logging.WARNING, "rate_limited", message, task=index, waitBudgetSeconds=budget
            )
    for index, future in dials:
        outcome = batch.dialed[index] = future.result()
        batch.finish(index, TaskStatus(outcome.status), outcome.error, retry=outcome.retry)


def _share(waiting: list[Group]) -> int:
    """Permits each group asks for this round: all it waits for when it is alone (a batch of
    one campaign, or none with limits, takes them in one call as it always has); else one, so
    that the campaigns take the trunk's slots in turn instead of the first reserving them all
    (a round trip a permit, for batches of several limited campaigns only)."""
    if len(waiting) == 1:
        return len(waiting[0].pending)
    return 1


def _redis_down(batch: Batch) -> bool:
    """Whether the batch's last word from Redis was a failure: its last decision failed open,
    or, before any, its claims did."""
    if batch.decisions:
        return batch.decisions[-1].fail_open
    return batch.redis_unavailable > 0


def _permits(
    batch: Batch, group: Group, wanted: int, left: float
) -> tuple[Decision | None, Link | None]:
    """One limiter call for the group's next ``wanted`` permits; None when Redis failed, fail
    closed."""
    max_wait = max(0.0, left)
    with tracer.start_as_current_span(
        "dialer.permits",
        attributes={"dialer.permits.requested": wanted, "dialer.permits.max_wait": max_wait},
    ) as span:
        try:
            decision = take(batch, group, wanted, max_wait)
        except BackendUnavailable as error:
            batch.redis_down(
                logging.ERROR,
                "acquire",
                "Redis unavailable for the CPS limit; not dialing (fail closed)",
                error=str(error),
            )
            return None, None
        span.set_attribute("dialer.permits.granted", decision.granted)
    batch.decisions.append(decision)
    log_event(
        logging.INFO,
        "cps_check",
        "CPS check",
        requested=wanted,
        granted=decision.granted,
        limit=decision.limit,
        remaining=decision.remaining,
        waitedSeconds=round(decision.waited, 3),
        retryAfterSeconds=round(decision.retry_after, 3),
        failOpen=decision.fail_open,
    )
    # Said once a batch, though it then asks for one permit at a time.
    if decision.fail_open and not any(earlier.fail_open for earlier in batch.decisions[:-1]):
        message = "Redis unavailable for the CPS limit; dialing without it (fail open)"
        batch.redis_down(logging.WARNING, "acquire", message)
    return decision, Link(span.get_span_context())


def _spacing(batch: Batch, decision: Decision) -> float:
    """How far apart the dials of a paced grant leave this container (0: not paced)."""
    strategy = batch.dialer.limiter.strategy
    if not isinstance(strategy, PacedWindow) or decision.fail_open:
        return 0.0
    return strategy.window * (1 + strategy.headroom) / max(decision.limit, 1)


def _dial_one(
    batch: Batch,
    index: int,
    parent: otel_context.Context,
    link: Link | None,
    at: float,
    spacing: float,
) -> DialOutcome:
    """Runs on a pool thread from the moment ``at`` (monotonic) on: the span's parent is passed
    in, as contextvars do not follow work into a ThreadPoolExecutor."""
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    if spacing:
        batch.dialer.gate.wait_turn(spacing)
    left = batch.dials_end - time.monotonic()
    if left <= 0:
        # Too late to dial and hear back before the invocation ends: handed back, unsent.
        return DialOutcome(
            DialStatus.RATE_LIMITED, TOO_LATE_ERROR, retry=True, reached_worker=False
        )
    task = batch.tasks[index]
    call_id = batch.call_ids.get(index) or call_id_of(task)
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
            batch.sent_seconds.append(int(time.time()))
            outcome = batch.dialer.worker.dial(command, headers, timeout=left)
        except Exception as error:
            # A bug must cost one task, not the batch; the call may have gone out, so no
            # retry and the claim stays.
            batch.log(logging.ERROR, "dial_failure", "dial raised", task=index, exc_info=True)
            outcome = DialOutcome(DialStatus.FAILED, f"internal error: {type(error).__name__}")
        span.set_attribute("dialer.outcome", str(outcome.status))
        if outcome.http_status is not None:
            span.set_attribute("http.response.status_code", outcome.http_status)
        if outcome.status is not DialStatus.SUCCESSFUL:
            span.set_status(Status(StatusCode.ERROR, outcome.error))
        fields = {
            "callId": call_id,
            "durationMs": round((time.monotonic() - started) * 1000, 1),
            "httpStatus": outcome.http_status,
        }
        if outcome.status is DialStatus.SUCCESSFUL:
            batch.log(logging.INFO, "dial_success", "dial command sent", task=index, **fields)
        else:
            level, event = (
                (logging.WARNING, "rate_limited")
                if outcome.status is DialStatus.RATE_LIMITED
                else (logging.ERROR, "worker_error")
                if outcome.worker_error
                else (logging.WARNING, "dial_failure")
            )
            message = outcome.error or ""
            batch.log(level, event, message, task=index, retry=outcome.retry, **fields)
    return outcome
