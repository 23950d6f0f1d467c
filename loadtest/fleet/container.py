"""``python -m loadtest.fleet.container``: one container of the fleet, as Lambda runs one.

It builds its `Dialer` from an environment as the Lambda does, says ``ready`` on stdout, waits
for ``go <start> <end>`` (unix seconds) on stdin, then invokes ``dialer.process`` one batch of
10 at a time, as one Lambda container does, until ``end``. Tasks arrive at ``--rate`` per
second from ``start`` on, into a queue of the container's own: when the limit holds the dials
back, the queue grows, as the pipe's does. The tasks a result lists in ``batchItemFailures``
go back to the front of the queue (the pipe redelivers them). At the end it prints one JSON
line of counts and exits.

The dialer's own output (JSON log lines, EMF) goes to ``--log``; stdout carries only the
protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from dialer_lambda import Dialer, Settings
from loadtest.tasks import BATCH, TaskFactory

LAMBDA_MILLIS: Final = 15_000
"""Each invocation starts with the time a 15-s Lambda has."""
CAMPAIGN: Final = "campaign-fleet"
MIN_SLEEP: Final = 0.001


@dataclass
class LambdaContext:
    """What the dialer reads from a Lambda context: a fresh invocation each time."""

    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_remaining_time_in_millis(self) -> int:
        return LAMBDA_MILLIS


@dataclass
class Queue:
    """The container's share of the pipe: tasks due at ``rate`` per second from ``start``,
    and the ones handed back for a retry, which come first."""

    factory: TaskFactory
    rate: float
    start: float
    made: int = 0
    retries: deque[dict[str, Any]] = field(default_factory=deque)

    def due(self, now: float) -> int:
        """Tasks waiting: arrived and not taken yet, retries included."""
        return math.floor(self.rate * (now - self.start)) - self.made + len(self.retries)

    def take(self, size: int) -> list[dict[str, Any]]:
        batch = [self.retries.popleft() for _ in range(min(size, len(self.retries)))]
        while len(batch) < size:
            task = self.factory.task()
            # The worker sees the metadata: with the attempt in it, the stub's record tells
            # each (campaignId, contactId, attempts) apart.
            task["metadata"] = {**task["metadata"], "attempts": task["attempts"]}
            batch.append(task)
            self.made += 1
        return batch

    def wait_for(self, size: int, end: float) -> bool:
        """Sleep until ``size`` tasks are due (the pipe fills a batch); False at ``end``."""
        while (now := time.time()) < end and self.due(now) < size:
            at = self.start + (size + self.made - len(self.retries)) / self.rate
            if at >= end:
                return False
            time.sleep(max(at - now, MIN_SLEEP))
        return now < end


def drive(dialer: Dialer, queue: Queue, end: float) -> dict[str, Any]:
    """Invoke the dialer on batches until ``end``; the counts of what became of the tasks."""
    outcomes: Counter[str] = Counter()
    invocations = errors = 0
    while time.time() < end and queue.wait_for(BATCH, end):
        batch = queue.take(BATCH)
        invocations += 1
        try:
            result = dialer.process(batch, LambdaContext())
        except Exception:
            # The whole batch comes back, as the pipe redelivers a failed invocation.
            errors += 1
            queue.retries.extendleft(reversed(batch))
            continue
        for status in ("successful", "failed", "rateLimited", "duplicates"):
            outcomes[status] += int(result[status])
        retried = {failure["itemIdentifier"] for failure in result["batchItemFailures"]}
        back = [task for task in batch if task["messageId"] in retried]
        outcomes["retried"] += len(back)
        queue.retries.extendleft(reversed(back))
    return {
        "invocations": invocations,
        "invocationErrors": errors,
        "tasksMade": queue.made,
        "left": len(queue.retries),
        **outcomes,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fleet.container")
    parser.add_argument("--name", required=True, help="the container's name, unique in the run")
    parser.add_argument("--rate", type=float, required=True, help="tasks arriving per second")
    parser.add_argument("--log", required=True, help="where the dialer's output goes")
    parser.add_argument(
        "--env", required=True, help="the dialer's environment, a JSON object of strings"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, protocol: TextIO | None = None) -> int:
    args = parse_args(argv)
    out = protocol or sys.stdout
    with (
        open(args.log, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        dialer = Dialer.from_settings(Settings.from_env(json.loads(args.env)))
        try:
            print("ready", file=out, flush=True)
            command = sys.stdin.readline().split()
            if len(command) != 3 or command[0] != "go":
                return 2
            start, end = float(command[1]), float(command[2])
            queue = Queue(TaskFactory(args.name, CAMPAIGN), args.rate, start)
            counts = drive(dialer, queue, end)
        finally:
            dialer.close()
    print(json.dumps({"name": args.name, **counts}), file=out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
