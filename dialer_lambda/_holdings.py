"""What a task holds in Redis, taken and given back: the claims' round trip at the start of a
batch, and `settle` at its end, the one place that gives back what a task that was not sent
holds (its pending claim, its campaign leases) and marks sent the claims of tasks that were.

What a batch does when Redis fails to claim or settle is decided here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from cps_limiter import BackendUnavailable

from ._campaigns import free_leases
from ._invocation import Invocation, Parts
from ._ledger import Holdings, Ledger
from ._outcome import FAIL_CLOSED_ERROR, TaskStatus

DUPLICATE_MESSAGE: Final = "task already dialed or being dialed; skipped"


def claim(ledger: Ledger, ready: list[int], parts: Parts, invocation: Invocation) -> list[int]:
    """The ready tasks this batch may dial, claimed in one round trip; a repeat is a duplicate.
    When Redis fails the batch dials without claims (fail open, as for the rate limit: a batch
    redelivered meanwhile may dial again), or with ``CPS_FAIL_MODE=closed`` hands all back.
    The keys are in the ledger before the round trip: a reply lost after Redis ran it still
    leaves the batch able to give them back."""
    if not ready:
        return []
    store = parts.claims
    keys = []
    for index in ready:
        task = ledger.task(index)
        key = store.key(task.campaign_id, task.contact_id, task.attempts)
        ledger.claiming(index, key)
        keys.append(key)
    try:
        fresh, containers = store.claim(keys, invocation.owner, invocation.lifetime)
    except BackendUnavailable as error:
        closed = parts.settings.fail_mode == "closed"
        ledger.redis_down(
            logging.ERROR if closed else logging.WARNING,
            "claim",
            "Redis unavailable for idempotency claims; "
            + ("not dialing (fail closed)" if closed else "dialing without them"),
            error=repr(error),
        )
        if not closed:
            return ready
        for index in ready:
            ledger.handed_back(index, TaskStatus.RATE_LIMITED, FAIL_CLOSED_ERROR)
        return []
    parts.limiter.set_peers(containers)
    claimed: list[int] = []
    for index, new in zip(ready, fresh, strict=True):
        if new:
            ledger.claimed(index)
            claimed.append(index)
        else:
            ledger.duplicate(index)
            ledger.log(logging.INFO, "duplicate_task", DUPLICATE_MESSAGE, task=index)
    return claimed


def settle(ledger: Ledger, parts: Parts, invocation: Invocation, holdings: Holdings) -> None:
    """Give back and mark what `Ledger.close` found, a round trip each at most; a Redis failure
    is logged, never raised: a pending claim then ends with its life, soon after the deadline,
    and a lease after CALL_MAX_SECONDS."""
    store, owner, refused = parts.claims, invocation.owner, holdings.refused
    _claims(
        ledger,
        holdings.give_back_claims,
        lambda keys: store.give_back(keys, owner, refused),
        logging.ERROR,
        "give_back",
        "could not give back idempotency claims; retried tasks count as duplicates until the "
        "claims expire, soon after this invocation's deadline",
    )
    # Only a whole-batch redelivery would find these claims pending, and the worker's
    # idempotency key stops its second call: a warning, as for failing open.
    _claims(
        ledger,
        holdings.mark_sent_claims,
        lambda keys: store.mark_sent(keys, owner),
        logging.WARNING,
        "mark_sent",
        "could not mark claims sent; a whole-batch redelivery after the deadline may dial them "
        "again (the worker's idempotency key stops the second call)",
    )
    if holdings.free_leases:
        free_leases(ledger, parts.limiter, holdings.free_leases)


def _claims(
    ledger: Ledger,
    keys: Sequence[str],
    settle_them: Callable[[Sequence[str]], object],
    level: int,
    operation: str,
    message: str,
) -> None:
    if not keys:
        return
    try:
        settle_them(keys)
    except BackendUnavailable as error:
        ledger.redis_down(level, operation, message, claims=len(keys), error=repr(error))
