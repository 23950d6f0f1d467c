"""Campaign limits: ``maxConcurrentCalls`` and ``maxCps``, taken with the trunk's CPS permit in one
decision, and the leases freed when their dial surely never reached the worker.

A batch's tasks are grouped by campaign (and its limits). A group without limits takes its
permits as the dialer always has, with one ``acquire``; a group with limits takes them with one
``acquire_all`` over the trunk's rule, the campaign's CPS rule and its concurrency rule, whose
lease ids are the calls' ``callId``. The worker frees a lease when its call ends with one
command, ``ZREM <prefix>:campaign:<campaignId>:leases <callId>``; a lease it never releases
expires ``CALL_MAX_SECONDS`` after its dial's moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cps_limiter import (
    MAX_LEASE_ID_LENGTH,
    BackendUnavailable,
    Concurrency,
    Decision,
    FixedWindow,
    Limiter,
    Rule,
    RulesDecision,
)

from ._ledger import Ledger
from ._logging import log_event
from ._outcome import NOT_GRANTED_ERROR
from ._tasks import DialTask

CAMPAIGN_FULL_ERROR: Final = "campaign at maxConcurrentCalls: no call slot free"
CAMPAIGN_CPS_ERROR: Final = "campaign at maxCps: no permit within the wait budget"


@dataclass(frozen=True, slots=True)
class Limits:
    campaign_id: str
    max_concurrent_calls: int | None
    max_cps: int | None

    @property
    def scope(self) -> str:
        """The scope of the campaign's keys: ``<prefix>:campaign:<id>:leases`` and so on."""
        return f"campaign:{self.campaign_id}"

    def rules(self, call_max_seconds: float) -> list[Rule]:
        rules = []
        if self.max_cps is not None:
            rules.append(Rule(FixedWindow(self.max_cps), self.scope))
        if self.max_concurrent_calls is not None:
            rules.append(Rule(Concurrency(self.max_concurrent_calls, call_max_seconds), self.scope))
        return rules


@dataclass(slots=True)
class Group:
    """Tasks of one campaign (or of every campaign without limits) waiting for permits."""

    limits: Limits | None
    pending: deque[int] = field(default_factory=deque)
    error: str = NOT_GRANTED_ERROR
    """Why what is left of the group is not dialed, once it stops getting permits."""


def limits_of(task: DialTask, leases: bool) -> Limits | None:
    """The campaign's limits in force: ``maxConcurrentCalls`` only with ``leases`` (the
    operator's word that the worker frees them)."""
    calls = task.max_concurrent_calls if leases else None
    if calls is None and task.max_cps is None:
        return None
    return Limits(task.campaign_id, calls, task.max_cps)


def groups_of(ledger: Ledger, ready: list[int], leases: bool) -> list[Group]:
    """The tasks by campaign limits, in the order they first appear; tasks without limits are
    one group, so that a batch without any takes its permits in one call, as it always has."""
    groups: dict[Limits | None, Group] = {}
    for index in ready:
        limits = limits_of(ledger.task(index), leases)
        groups.setdefault(limits, Group(limits)).pending.append(index)
    return list(groups.values())


class CallIds:
    """callIds in the seed's format, ``call-<campaignId>-<contactId>-<ms>``, each with a
    millisecond of its own in this container: two tasks of one contact in one batch (attempts
    0 and 1) get two callIds, and so two leases. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self, task: DialTask) -> str:
        with self._lock:
            self._last = max(time.time_ns() // 1_000_000, self._last + 1)
            ms = self._last
        return f"call-{task.campaign_id}-{task.contact_id}-{ms}"


CALL_IDS: Final = CallIds()
# The milliseconds of a callId: 13 digits until the year 2286.
_CALL_ID_EXTRA: Final = len("call---") + 13


def lease_id_problem(task: DialTask, leases: bool) -> str | None:
    """Why the task's callId cannot be a lease id, for a campaign with leases (None: it can)."""
    if task.max_concurrent_calls is None or not leases:
        return None
    longest = MAX_LEASE_ID_LENGTH - _CALL_ID_EXTRA
    if len(task.campaign_id) + len(task.contact_id) > longest:
        return (
            f"campaignId and contactId must hold at most {longest} characters together when the "
            f"campaign has maxConcurrentCalls: its callId is the lease id, at most "
            f"{MAX_LEASE_ID_LENGTH} characters"
        )
    return None


def take(
    ledger: Ledger,
    limiter: Limiter,
    call_max_seconds: float,
    group: Group,
    wanted: int,
    max_wait: float,
) -> Decision:
    """The permits for the group's next ``wanted`` tasks (`BackendUnavailable` passes). The
    leases a rules call may take are in the ledger before it is sent."""
    if group.limits is None:
        return limiter.acquire(permits=wanted, partial=True, max_wait=max_wait)
    limits = group.limits
    indices = list(group.pending)[:wanted]
    ids = [CALL_IDS.next(ledger.task(index)) for index in indices]
    leased = limits.max_concurrent_calls is not None
    for index, call_id in zip(indices, ids, strict=True):
        ledger.calling(index, call_id, limits.scope if leased else None)
    decision = limiter.acquire_all(
        [Rule(limiter.strategy), *limits.rules(call_max_seconds)],
        wanted,
        partial=True,
        max_wait=max_wait,
        leases=ids if leased else [],
    )
    if decision.expired_leases:
        ledger.note_expired_leases(decision.expired_leases)
        log_event(
            logging.WARNING,
            "leases_expired",
            "campaign leases expired unfreed: the worker is not freeing leases when calls end "
            "(WORKER_FREES_LEASES=true says it does)",
            campaignId=limits.campaign_id,
            leases=decision.expired_leases,
        )
    if decision.granted < wanted:
        group.error = _why(decision, limits)
    return decision


def _why(decision: RulesDecision, limits: Limits) -> str:
    """The error of the tasks a campaign rule held back (the trunk's, rule 0, is the default)."""
    at = decision.limited_by
    if at is None or at == 0:
        return NOT_GRANTED_ERROR
    held_back = limits.rules(1.0)[at - 1].limit
    return CAMPAIGN_FULL_ERROR if isinstance(held_back, Concurrency) else CAMPAIGN_CPS_ERROR


def free_leases(ledger: Ledger, limiter: Limiter, leases: Sequence[tuple[str, str]]) -> None:
    """Free ``leases`` (scope, id), one call a campaign; a Redis failure is logged, and the
    leases then expire after CALL_MAX_SECONDS."""
    by_scope: dict[str, list[str]] = {}
    for scope, lease in leases:
        by_scope.setdefault(scope, []).append(lease)
    for scope, ids in by_scope.items():
        try:
            limiter.free(scope, *ids)
        except BackendUnavailable as error:
            ledger.redis_down(
                logging.ERROR,
                "free_leases",
                "could not free campaign leases; they expire after CALL_MAX_SECONDS",
                leases=len(ids),
                error=repr(error),
            )
            continue
        log_event(logging.INFO, "leases_freed", "leases freed", scope=scope, leases=len(ids))
