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
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from cps_limiter import BackendUnavailable, Decision, PacedWindow

from ._campaigns import CALL_IDS, Group, groups_of, take
from ._claims import task_identity
from ._invocation import Invocation, Parts
from ._ledger import Ledger, State
from ._logging import LOGGER_NAME, log_event
from ._outcome import FAIL_CLOSED_ERROR, TOO_LATE_ERROR, TaskStatus
from ._version import __version__
from ._worker import DialOutcome, DialStatus

tracer = trace.get_tracer(LOGGER_NAME, __version__)
_BATCHES = itertools.count()
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
"""The same on every delivery of a task (campaign, contact, attempts): a worker that places no
second call for a key it has placed closes the one window no dialer can close alone."""


def dial(ledger: Ledger, ready: list[int], parts: Parts, invocation: Invocation) -> None:
    """Dial what the limits allow within the budget; the rest is rate limited and retried.

    Tasks are grouped by campaign limits (`_campaigns`); while several groups wait, each asks
    in turn for its share of what is left, so that no campaign takes the whole trunk. Returns
    once every dial it started has ended, whatever raises."""
    dials: dict[Future[None], int] = {}
    try:
        _take_and_start(ledger, ready, parts, invocation, dials)
        _mark_sent_as_they_end(ledger, parts, invocation, dials)
    finally:
        # Nothing a dial holds may be given back while it may still be sent.
        wait(dials)
    for future in dials:
        future.result()


def _take_and_start(
    ledger: Ledger,
    ready: list[int],
    parts: Parts,
    invocation: Invocation,
    dials: dict[Future[None], int],
) -> None:
    groups = groups_of(ledger, ready, parts.settings.worker_frees_leases)
    parent = otel_context.get_current()
    # Each batch of several campaigns starts with another: the first to ask gets the first slot.
    turn = next(_BATCHES) % len(groups) if groups else 0
    waiting = groups[turn:] + groups[:turn]
    while waiting:
        share = _share(waiting)
        for group in list(waiting):
            # While Redis is down, one permit at a time: a local grant reaches one slot ahead,
            # so once Redis is back this container's next dial is under Redis's pace, not the
            # rest of a second of local slots on top of it.
            wanted = 1 if _redis_down(ledger) else min(len(group.pending), share)
            asked = time.monotonic()
            left = invocation.deadline - asked
            decision, link = _permits(ledger, parts, group, wanted, left)
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
            spacing = _spacing(parts, decision)
            leased = group.limits is not None and group.limits.max_concurrent_calls is not None
            for moment in moments[: len(group.pending)]:
                index = group.pending.popleft()
                at = first + moment
                ledger.permitted(index, at, leased=leased)
                future = parts.executor.submit(
                    _dial_one, ledger, parts, invocation, index, parent, link, at, spacing
                )
                dials[future] = index
            # With the budget spent, a short grant is the group's last: asking again at once
            # would only catch a window that happened to open since, a round trip on a chance.
            if not group.pending or (decision.granted < wanted and left <= 0):
                waiting.remove(group)
        # The next round starts with another group: the first to ask gets the earliest slots.
        waiting = waiting[1:] + waiting[:1]
    for group in groups:
        for index in group.pending:
            error = group.error
            ledger.handed_back(index, TaskStatus.RATE_LIMITED, error)
            message, budget = (
                f"rate limited, back to the queue: {error}",
                round(invocation.budget, 3),
            )
            ledger.log(
                logging.WARNING, "rate_limited", message, task=index, waitBudgetSeconds=budget
            )


def _share(waiting: list[Group]) -> int:
    """Permits each group asks for this round: all it waits for when it is alone (a batch of
    one campaign, or none with limits, takes them in one call as it always has); else one, so
    that the campaigns take the trunk's slots in turn instead of the first reserving them all
    (a round trip a permit, for batches of several limited campaigns only)."""
    if len(waiting) == 1:
        return len(waiting[0].pending)
    return 1


def _redis_down(ledger: Ledger) -> bool:
    """Whether the batch's last word from Redis was a failure: its last decision failed open,
    or, before any, its claims did."""
    if ledger.decisions:
        return ledger.decisions[-1].fail_open
    return ledger.redis_unavailable > 0


def _permits(
    ledger: Ledger, parts: Parts, group: Group, wanted: int, left: float
) -> tuple[Decision | None, Link | None]:
    """One limiter call for the group's next ``wanted`` permits; None when Redis failed, fail
    closed."""
    max_wait = max(0.0, left)
    with tracer.start_as_current_span(
        "dialer.permits",
        attributes={"dialer.permits.requested": wanted, "dialer.permits.max_wait": max_wait},
    ) as span:
        try:
            decision = take(
                ledger, parts.limiter, parts.settings.call_max_seconds, group, wanted, max_wait
            )
        except BackendUnavailable as error:
            ledger.redis_down(
                logging.ERROR,
                "acquire",
                "Redis unavailable for the CPS limit; not dialing (fail closed)",
                error=str(error),
            )
            return None, None
        span.set_attribute("dialer.permits.granted", decision.granted)
    ledger.note_decision(decision)
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
    if decision.fail_open and not any(earlier.fail_open for earlier in ledger.decisions[:-1]):
        message = "Redis unavailable for the CPS limit; dialing without it (fail open)"
        ledger.redis_down(logging.WARNING, "acquire", message)
    return decision, Link(span.get_span_context())


def _spacing(parts: Parts, decision: Decision) -> float:
    """How far apart the dials of a paced grant leave this container (0: not paced)."""
    strategy = parts.limiter.strategy
    if not isinstance(strategy, PacedWindow) or decision.fail_open:
        return 0.0
    return strategy.window * (1 + strategy.headroom) / max(decision.limit, 1)


def _dial_one(
    ledger: Ledger,
    parts: Parts,
    invocation: Invocation,
    index: int,
    parent: otel_context.Context,
    link: Link | None,
    at: float,
    spacing: float,
) -> None:
    """Runs on a pool thread from the moment ``at`` (monotonic) on: the span's parent is passed
    in, as contextvars do not follow work into a ThreadPoolExecutor. Reports to the ledger."""
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    if spacing:
        parts.gate.wait_turn(spacing)
    left = invocation.dials_end - time.monotonic()
    if left <= 0:
        # Too late to dial and hear back before the invocation ends: handed back, unsent.
        ledger.handed_back(index, TaskStatus.RATE_LIMITED, TOO_LATE_ERROR)
        ledger.log(logging.WARNING, "rate_limited", TOO_LATE_ERROR, task=index, retry=True)
        return
    task = ledger.task(index)
    call_id = ledger.records[index].call_id or CALL_IDS.next(task)
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
        headers = {
            IDEMPOTENCY_HEADER: task_identity(task.campaign_id, task.contact_id, task.attempts)
        }
        propagate.inject(headers)  # traceparent, when an SDK records this span
        started = time.monotonic()
        ledger.sending(index)
        ledger.note_sent_second(int(time.time()))
        outcome = parts.worker.dial(command, headers, timeout=left)
        ledger.dialed(index, outcome)
        span.set_attribute("dialer.outcome", str(outcome.status))
        if outcome.http_status is not None:
            span.set_attribute("http.response.status_code", outcome.http_status)
        if outcome.status is not DialStatus.SUCCESSFUL:
            span.set_status(Status(StatusCode.ERROR, outcome.error))
        _log_dial(ledger, index, outcome, call_id, time.monotonic() - started)


def _mark_sent_as_they_end(
    ledger: Ledger, parts: Parts, invocation: Invocation, dials: dict[Future[None], int]
) -> None:
    """Mark each sent task's claim sent as soon as its dial ends, those that end together in
    one round trip, all from this thread: the container keeps one Redis connection. A failure
    leaves the marks to `_holdings.settle`, which tries once more."""
    waiting = set(dials)
    while waiting:
        done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
        records = [(dials[f], ledger.records[dials[f]]) for f in done]
        sent = [
            (index, record.claim)
            for index, record in records
            if record.state is State.SENT and record.claim is not None
        ]
        if not sent:
            continue
        try:
            marked = parts.claims.mark_sent([key for _, key in sent], invocation.owner)
        except BackendUnavailable:
            continue
        for (index, _), ok in zip(sent, marked, strict=True):
            ledger.claim_marked_sent(index)
            if not ok:
                message = "claim taken by another delivery before the send was recorded"
                ledger.log(logging.ERROR, "claim_lost", message, task=index)


def _log_dial(
    ledger: Ledger, index: int, outcome: DialOutcome, call_id: str, seconds: float
) -> None:
    fields = {
        "callId": call_id,
        "durationMs": round(seconds * 1000, 1),
        "httpStatus": outcome.http_status,
    }
    if outcome.status is DialStatus.SUCCESSFUL:
        ledger.log(logging.INFO, "dial_success", "dial command sent", task=index, **fields)
        return
    level, event = (
        (logging.WARNING, "rate_limited")
        if outcome.status is DialStatus.RATE_LIMITED
        else (logging.ERROR, "worker_error")
        if outcome.worker_error
        else (logging.WARNING, "dial_failure")
    )
    ledger.log(level, event, outcome.error or "", task=index, retry=outcome.retry, **fields)
