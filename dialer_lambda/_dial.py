"""Permits for the whole batch, and each granted task handed to the dial pool at once
(`_send`), its claim marked sent as its dial ends.

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

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link

from cps_limiter import BackendUnavailable, Decision, PacedWindow

from ._campaigns import Group, groups_of, take
from ._invocation import Invocation, Parts
from ._ledger import Ledger, State
from ._logging import LOGGER_NAME, log_event
from ._outcome import FAIL_CLOSED_ERROR, TaskStatus
from ._send import send_one
from ._version import __version__

tracer = trace.get_tracer(LOGGER_NAME, __version__)
_BATCHES = itertools.count()


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
                    send_one, ledger, parts, invocation, index, parent, link, at, spacing
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
