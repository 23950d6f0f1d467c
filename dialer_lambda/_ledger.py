"""The ledger of one batch: a record per task, its state and what it holds, and the one place
that ends every task and says what must be given back.

A task's state only moves forward, through the ledger's methods, and every state past
`State.SENDING` is an ending: a task ends once. What a task holds (its claim, its campaign leases)
is written down *before* the round trip that may take it, so that a reply that comes late, or
never, still leaves the batch knowing what to give back. `Ledger.close` ends whatever a step
left open (a raise, a kill of the steps' thread) and returns the holdings to settle: claims and
leases of tasks that were not sent are given back; claims of tasks that were are marked sent.

The ledger is thread-safe: dials report from the pool's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from cps_limiter import Decision

from ._logging import log_event
from ._outcome import TaskOutcome, TaskStatus
from ._tasks import DialTask, Reported
from ._worker import BUSY_STATUSES, DialOutcome

INTERNAL_ERROR: Final = "internal error before the dial; back to the queue"
MAYBE_SENT_ERROR: Final = "internal error during the dial; it may have been placed, not retried"


class State(IntEnum):
    """Where a task is; the order is the only way a task may move. Endings are >= SENT."""

    RECEIVED = 0
    CLAIMED = 1
    PERMITTED = 2
    LEASED = 3
    SENDING = 4
    SENT = 10
    HANDED_BACK = 11
    DUPLICATE = 12
    GATED = 13
    INVALID = 14

    @property
    def ended(self) -> bool:
        return self >= State.SENT


@dataclass(slots=True)
class Record:
    """One task: its state, its ending, and what it holds."""

    reported: Reported
    state: State = State.RECEIVED
    task: DialTask | None = None
    claim: str | None = None
    """The claim's key, from before the claims' round trip (it may or may not have been set)."""
    claim_sent: bool = False
    """Whether the claim was marked sent after the POST left."""
    call_id: str | None = None
    """The callId its dial carries, when a campaign rule named it (else named at the dial)."""
    leases: list[tuple[str, str]] = field(default_factory=list)
    """(scope, lease id) of every rules call that may have taken one, from before the call;
    the last is the one a sent task holds."""
    moment: float | None = None
    """The permit's moment (monotonic seconds)."""
    outcome: TaskOutcome | None = None
    dialed: DialOutcome | None = None


@dataclass(frozen=True, slots=True)
class Holdings:
    """What `Ledger.close` found to settle in Redis."""

    give_back_claims: tuple[str, ...] = ()
    free_leases: tuple[tuple[str, str], ...] = ()
    mark_sent_claims: tuple[str, ...] = ()
    refused: int = 0
    """Dials the worker answered 429 or 503: the carrier's (or its own) refusals."""


class StateError(RuntimeError):
    """A step tried to move a task backwards or end it twice: a bug, never a task's fault."""


@dataclass
class Ledger:
    """The records of one batch, in the event's order; see the module's docstring."""

    records: list[Record]
    decisions: list[Decision] = field(default_factory=list)
    """Every limiter decision of the batch, in order."""
    sent_seconds: list[int] = field(default_factory=list)
    """The unix second each dial left in."""
    redis_unavailable: int = 0
    leases_expired: int = 0
    """Campaign leases the batch's decisions found expired: never freed by the worker."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, event: Sequence[Any]) -> Ledger:
        return cls([Record(Reported.of(raw)) for raw in event])

    def __len__(self) -> int:
        return len(self.records)

    def task(self, index: int) -> DialTask:
        task = self.records[index].task
        if task is None:
            raise StateError(f"task {index} was never validated")
        return task

    # moves: each checks that the state goes forward

    def _move(self, index: int, state: State) -> Record:
        record = self.records[index]
        if record.state.ended or state <= record.state:
            raise StateError(f"task {index}: {record.state.name} cannot become {state.name}")
        record.state = state
        return record

    def _end(self, index: int, state: State, outcome: TaskOutcome) -> None:
        self._move(index, state).outcome = outcome

    def validated(self, index: int, task: DialTask) -> None:
        with self._lock:
            record = self.records[index]
            if record.state is not State.RECEIVED or record.task is not None:
                raise StateError(f"task {index} validated twice")
            record.task = task

    def invalid(self, index: int, error: str) -> None:
        # Retried on purpose: an invalid task is nobody's to drop, so it goes round the queue
        # until its redrive policy moves it to the dead-letter queue.
        with self._lock:
            self._end(index, State.INVALID, TaskOutcome(TaskStatus.FAILED, error, retry=True))

    def gated(self, index: int, reason: str) -> None:
        with self._lock:
            self._end(index, State.GATED, TaskOutcome(TaskStatus.FAILED, reason))

    def claiming(self, index: int, key: str) -> None:
        """Before the claims' round trip: the key it may set."""
        with self._lock:
            self.records[index].claim = key

    def claimed(self, index: int) -> None:
        with self._lock:
            self._move(index, State.CLAIMED)

    def duplicate(self, index: int) -> None:
        with self._lock:
            record = self._move(index, State.DUPLICATE)
            # Someone else's claim: never ours to give back.
            record.claim = None
            record.outcome = TaskOutcome(TaskStatus.DUPLICATE)

    def calling(self, index: int, call_id: str, lease_scope: str | None) -> None:
        """Before the rules call: the task's callId, and the lease the call may take."""
        with self._lock:
            record = self.records[index]
            record.call_id = call_id
            if lease_scope is not None:
                record.leases.append((lease_scope, call_id))

    def permitted(self, index: int, moment: float, *, leased: bool) -> None:
        with self._lock:
            record = self._move(index, State.LEASED if leased else State.PERMITTED)
            record.moment = moment

    def sending(self, index: int) -> None:
        with self._lock:
            self._move(index, State.SENDING)

    def handed_back(self, index: int, status: TaskStatus, error: str | None) -> None:
        """Not sent: the task goes back to the queue, and what it holds is given back."""
        with self._lock:
            self._end(index, State.HANDED_BACK, TaskOutcome(status, error, retry=True))

    def dialed(self, index: int, dialed: DialOutcome) -> None:
        """The POST's outcome: sent, or handed back when the worker surely never got it."""
        with self._lock:
            state = State.SENT if dialed.reached_worker else State.HANDED_BACK
            outcome = TaskOutcome(TaskStatus(dialed.status), dialed.error, dialed.retry)
            self._end(index, state, outcome)
            self.records[index].dialed = dialed

    def claim_marked_sent(self, index: int) -> None:
        with self._lock:
            self.records[index].claim_sent = True

    def note_decision(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def note_sent_second(self, second: int) -> None:
        with self._lock:
            self.sent_seconds.append(second)

    def note_expired_leases(self, count: int) -> None:
        with self._lock:
            self.leases_expired += count

    def note_redis_down(self) -> None:
        with self._lock:
            self.redis_unavailable += 1

    def log(self, level: int, event: str, message: str, *, task: int, **fields: Any) -> None:
        """A line about one task, with its ids and masked phone number."""
        log_event(level, event, message, **fields, **self.records[task].reported.log_fields())

    def redis_down(self, level: int, operation: str, message: str, **fields: Any) -> None:
        """Count a Redis failure for the metric and say what it cost."""
        self.note_redis_down()
        log_event(level, "redis_unavailable", message, operation=operation, **fields)

    # reading

    def outcomes(self) -> list[TaskOutcome]:
        with self._lock:
            outcomes = [record.outcome for record in self.records]
        if any(outcome is None for outcome in outcomes):
            raise StateError("a task was never ended")
        return [outcome for outcome in outcomes if outcome is not None]

    # the end

    def close(self) -> tuple[list[int], Holdings]:
        """End every task still open, and say what to settle.

        A task that never reached `State.SENDING` goes back to the queue. One in
        `State.SENDING` (its dial's thread never reported) may have reached the worker: it ends
        failed and is not retried, and its claim is kept, marked sent. Returns the indices
        ended here and the holdings.
        """
        ended: list[int] = []
        with self._lock:
            for index, record in enumerate(self.records):
                if record.state.ended:
                    continue
                ended.append(index)
                if record.state is State.SENDING:
                    outcome = TaskOutcome(TaskStatus.FAILED, MAYBE_SENT_ERROR)
                    self._end(index, State.SENT, outcome)
                else:
                    outcome = TaskOutcome(TaskStatus.FAILED, INTERNAL_ERROR, retry=True)
                    self._end(index, State.HANDED_BACK, outcome)
            unsent = [r for r in self.records if r.state is State.HANDED_BACK]
            sent = [r for r in self.records if r.state is State.SENT]
            holdings = Holdings(
                give_back_claims=tuple(r.claim for r in unsent if r.claim is not None),
                # A sent task keeps the lease its grant took; any other it may hold goes.
                free_leases=tuple(
                    lease
                    for r in self.records
                    for lease in (r.leases if r.state is not State.SENT else r.leases[:-1])
                ),
                mark_sent_claims=tuple(
                    r.claim for r in sent if r.claim is not None and not r.claim_sent
                ),
                refused=sum(
                    r.dialed is not None and r.dialed.http_status in BUSY_STATUSES
                    for r in self.records
                ),
            )
        return ended, holdings
