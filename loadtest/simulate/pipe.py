"""The pipe in front of the handler, simulated: a queue delivering batches to invocations,
sending back what a result lists in ``batchItemFailures`` after a visibility timeout, and
moving a message to the dead-letter queue after its last receive."""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

LAMBDA_TIMEOUT_SECONDS: Final = 15.0  # the seed's function timeout
HANDLER_RAISED: Final = "the handler raised"
RATE_LIMITED_REASON: Final = "rate limited"
INVALID_REASON: Final = "invalid task"

HandlerFunction = Callable[[Any, Any], Mapping[str, Any]]


@dataclass
class Message:
    task: dict[str, Any]
    message_id: str
    receive_count: int = 0
    duplicate_pending: bool = False


@dataclass
class Tally:
    invocations: int = 0
    invocation_errors: int = 0
    deliveries: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    settled: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    redeliveries: int = 0
    redelivered: set[str] = field(default_factory=set)
    duplicate_deliveries: int = 0


def retry_reasons(batch: Sequence[Message], result: Mapping[str, Any] | None) -> dict[str, str]:
    """Why each message the result sends back failed, by message id."""
    if result is None:
        return {message.message_id: HANDLER_RAISED for message in batch}
    errors = {item.get("contactId"): str(item.get("error")) for item in result.get("errors") or ()}
    reasons = {}
    for item in result.get("batchItemFailures") or ():
        message_id = item["itemIdentifier"]
        task = next((m.task for m in batch if m.message_id == message_id), {})
        # Retried tasks that are not in `errors` are the rate-limited ones.
        error = errors.get(task.get("contactId"), RATE_LIMITED_REASON)
        reasons[message_id] = INVALID_REASON if error.startswith(INVALID_REASON) else error
    return reasons


class Pipe:
    """The source queue and its redrive policy, as the invocations see it.

    A message sent back becomes visible again after `visibility_timeout` seconds (the queue's
    visibility timeout, scaled down) and moves to the dead-letter queue once it has been
    received `max_receive_count` times.
    """

    def __init__(
        self,
        messages: Sequence[Message],
        *,
        max_receive_count: int,
        visibility_timeout: float,
        on_settled: Callable[[int], None],
    ) -> None:
        self._visible = deque(messages)
        self._hidden: list[tuple[float, int, Message]] = []
        self._hidden_order = 0
        self._max_receive_count = max_receive_count
        self._visibility_timeout = visibility_timeout
        self._on_settled = on_settled
        self._in_flight = 0
        self._changed = threading.Condition()
        self.tally = Tally()
        self.ran_dry_at: float | None = None
        """Unix time at which an invocation first found no message to take: until then every
        invocation had a batch, so demand was all the invocations could ask for."""

    def take(self, size: int) -> list[Message] | None:
        """The next batch: waits while no message is visible but some may still come back;
        None once every message has left the queue for good."""
        with self._changed:
            while True:
                now = time.monotonic()
                while self._hidden and self._hidden[0][0] <= now:
                    self._visible.append(heapq.heappop(self._hidden)[2])
                if self._visible:
                    break
                if self.ran_dry_at is None:
                    self.ran_dry_at = time.time()
                if not self._hidden and not self._in_flight:
                    return None
                self._changed.wait(self._hidden[0][0] - now if self._hidden else None)
            batch = [self._visible.popleft() for _ in range(min(size, len(self._visible)))]
            for message in batch:
                message.receive_count += 1
            self._in_flight += len(batch)
            self.tally.invocations += 1
            self.tally.deliveries += len(batch)
            return batch

    def settle(self, batch: Sequence[Message], result: Mapping[str, Any] | None) -> None:
        """Send the failed messages back (or to the dead-letter queue); delete the rest."""
        reasons = retry_reasons(batch, result)
        settled = 0
        with self._changed:
            tally = self.tally
            if result is None:
                tally.invocation_errors += 1
            else:
                for key in ("successful", "failed", "rateLimited", "duplicates"):
                    tally.outcomes[key] += int(result.get(key, 0))
            for message in batch:
                if message.message_id in reasons:
                    if message.receive_count >= self._max_receive_count:
                        tally.dead_letter_reasons[reasons[message.message_id]] += 1
                        settled += 1
                    else:
                        tally.redeliveries += 1
                        tally.redelivered.add(message.message_id)
                        self._hide(message)
                elif message.duplicate_pending:
                    message.duplicate_pending = False
                    tally.duplicate_deliveries += 1
                    self._hide(message)
                else:
                    tally.settled += 1
                    settled += 1
            self._in_flight -= len(batch)
            self._changed.notify_all()
            if settled:
                self._on_settled(settled)

    def _hide(self, message: Message) -> None:
        self._hidden_order += 1
        visible_at = time.monotonic() + self._visibility_timeout
        heapq.heappush(self._hidden, (visible_at, self._hidden_order, message))


@dataclass(frozen=True)
class LambdaContext:
    """The part of the Lambda context the handler reads: the time left."""

    deadline: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "dialer-worker-simulation"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def invoke_until_drained(pipe: Pipe, handler: HandlerFunction, batch_size: int) -> None:
    while (batch := pipe.take(batch_size)) is not None:
        context = LambdaContext(time.monotonic() + LAMBDA_TIMEOUT_SECONDS)
        try:
            result: Mapping[str, Any] | None = handler([m.task for m in batch], context)
        except Exception:
            # What the pipe does when the function fails: the whole batch comes back.
            result = None
        pipe.settle(batch, result)
