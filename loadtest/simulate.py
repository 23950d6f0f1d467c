"""A campaign, simulated end to end: ``python -m loadtest.simulate`` (``make demo``).

The real handler (`dialer_lambda.handler`) runs in many concurrent invocations, in threads, over
a few thousand synthetic dial tasks, against ``memory://`` and the worker stub started in this
process (or a real Redis and worker given by ``--redis-url`` and ``--worker-url``).

A small model of the pipe sits in front of it: a queue of messages taken in batches of 10;
the tasks a result lists in ``batchItemFailures`` (or the whole batch, when the handler raises)
become visible again after a (scaled-down) visibility timeout, until their receive count reaches
the redrive limit and they move to the dead-letter queue. A few messages that were handled are
delivered once more, as SQS standard queues do now and then, to show that nobody is called twice.

A health agent reads the worker's own health every 100 ms and reports it to the handler's
limiter, whose adaptive policy cuts the pace; ``--cpu-spike-at`` raises the worker's CPU
mid-run to show it. `Hooks` replaces the agent.

The summary counts the outcomes, the redeliveries, and the pace at the worker: calls per second
against the limit, and the most calls that arrived within any one second (exact over every
arrival, not per aligned second). A PNG chart shows the calls per 100 ms against the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO, cast

import httpx

from cps_limiter import Limiter
from dialer_lambda._logging import JsonFormatter, StdoutHandler
from loadtest.example import seed_task

from .worker_stub import Behaviour, Call, Outcome, RemoteStub, StubHandle, StubHealth, WorkerStub

StrategyName = Literal["fixed", "sliding", "token"]

STRATEGIES: Final[tuple[StrategyName, ...]] = ("fixed", "sliding", "token")
DEFAULT_STRATEGY: Final[StrategyName] = "fixed"
DEFAULT_TASKS: Final = 3000
DEFAULT_BATCH_SIZE: Final = 10
MAX_BATCH_SIZE: Final = 10  # the pipe's SQS batch size in the seed
DEFAULT_CONCURRENCY: Final = 50
# High enough that the default run is over in well under a minute, low enough that the pace,
# not the machine, is what limits it.
DEFAULT_MAX_CPS: Final = 200
DEFAULT_WORKER_DELAY_MS: Final = 50.0
DEFAULT_WORKER_FAIL_RATE: Final = 0.01
DEFAULT_INVALID_RATE: Final = 0.01
DEFAULT_DUPLICATE_RATE: Final = 0.01
DEFAULT_MAX_RECEIVE_COUNT: Final = 5  # the redrive count AWS advises for a pipe's source queue
DEFAULT_SEED: Final = 7
DEFAULT_OUT: Final = Path("demo-output")
DEFAULT_CPU_SPIKE_PERCENT: Final = 95.0
LAMBDA_TIMEOUT_SECONDS: Final = 15.0  # the seed's function timeout
CHART_BUCKET_SECONDS: Final = 0.1
WINDOW_SECONDS: Final = 1.0
MONITOR_INTERVAL_SECONDS: Final = 0.1
MEMORY_URL: Final = "memory://"
# Outcomes of a request that surely placed no call at the worker.
NOT_PLACED: Final = frozenset(
    {Outcome.HTTP_429, Outcome.HTTP_503, Outcome.CLOSE, Outcome.BAD_REQUEST}
)
# The real queue's visibility timeout is 90 s or more (six times the pipe's timeout): scaled
# down so that the demo ends soon. What matters is its ratio to the backlog: five receives
# must outlast the time the limit needs to work through the tasks in flight, or tasks that
# were merely paced land in the dead-letter queue (at 1 s, dozens do in the default run).
DEFAULT_VISIBILITY_TIMEOUT: Final = 3.0
SERVICE_NAME: Final = "dialer-worker-simulation"
LIMITER_LOGGER: Final = "cps_limiter"
HANDLER_RAISED: Final = "the handler raised"
RATE_LIMITED_REASON: Final = "rate limited"
INVALID_REASON: Final = "invalid task"

HandlerFunction = Callable[[Any, Any], Mapping[str, Any]]


# -- configuration and hooks ---------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated campaign run; the defaults are those of ``make demo``."""

    strategy: StrategyName = DEFAULT_STRATEGY
    max_cps: int = DEFAULT_MAX_CPS
    tasks: int = DEFAULT_TASKS
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    worker_delay_ms: float = DEFAULT_WORKER_DELAY_MS
    worker_fail_rate: float = DEFAULT_WORKER_FAIL_RATE
    invalid_rate: float = DEFAULT_INVALID_RATE
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    max_wait: float | None = None
    """RATE_LIMIT_MAX_WAIT_SECONDS for the handler; None keeps the handler's default."""
    redis_url: str = MEMORY_URL
    key_prefix: str | None = None
    """CPS_KEY_PREFIX for the handler; None gives each run its own, so that no run (nor the
    health it reports) paces another, and a real Redis's `cps` keys are left alone."""
    worker_url: str | None = None
    """A worker that is already running; None starts the stub in this process."""
    out: Path = DEFAULT_OUT
    seed: int = DEFAULT_SEED
    cpu_spike_at: float | None = None
    """Seconds into the run at which the worker's simulated CPU jumps to `cpu_spike_percent`."""
    cpu_spike_percent: float = DEFAULT_CPU_SPIKE_PERCENT
    progress: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        for name in ("max_cps", "tasks", "concurrency", "max_receive_count"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        for name in ("worker_fail_rate", "invalid_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
        for name in ("worker_delay_ms", "visibility_timeout", "max_wait", "cpu_spike_at"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number, 0 or more")
        if not 0.0 <= self.cpu_spike_percent <= 100.0:
            raise ValueError("cpu_spike_percent must be between 0 and 100")

    def handler_env(self, worker_url: str, key_prefix: str) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "NODE_WORKER_URL": worker_url,
            "MAX_CPS": str(self.max_cps),
            "CPS_STRATEGY": self.strategy,
            "CPS_KEY_PREFIX": key_prefix,
            "SERVICE_NAME": SERVICE_NAME,
        }
        if self.max_wait is not None:
            env["RATE_LIMIT_MAX_WAIT_SECONDS"] = repr(self.max_wait)
        return env


@dataclass(frozen=True)
class Hooks:
    """The health agent of the dialing host, replaceable without changing the run.

    About every 100 ms the run reads the worker's own health (``GET /health``), hands it to
    `on_health`, and reads `limit_in_force` for the chart. None means the built-in agent:
    publish the health to the handler's limiter (`Limiter.report_health`, which its adaptive
    policy reads) and read the limit in force back (`Limiter.peek`).
    """

    on_health: Callable[[StubHealth], None] | None = None
    limit_in_force: Callable[[], float] | None = None


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """The calls as the worker saw them arrive."""

    worker_calls: int
    placed_twice: int
    """Tasks (campaignId, contactId, attempts) placed at the worker more than once."""
    span_seconds: float
    achieved_cps: float
    max_in_any_second: int
    busiest_second_start: float
    """Start of the busiest one-second interval, in seconds since the chart's origin."""
    lag_p50: float | None
    lag_p99: float | None
    """Seconds from the moment in a call's callId (stamped as the dial starts) to its arrival
    at the worker: how much the dial path itself (threads, connections) shifts the calls."""
    chart: Path | None


@dataclass(frozen=True)
class Summary:
    """What a run did; `ok` when every task is accounted for and nobody was called twice."""

    strategy: StrategyName
    max_cps: int
    tasks: int
    invocations: int
    invocation_errors: int
    deliveries: int
    successful: int
    failed: int
    rate_limited: int
    duplicates: int
    settled: int
    dead_letter_reasons: Mapping[str, int]
    redeliveries: int
    redelivered_tasks: int
    duplicate_deliveries: int
    redis_unavailable: int
    """Decisions and claims made without Redis (fail-open), from the handler's metrics."""
    limit_changes: tuple[tuple[float, float], ...]
    """(seconds into the run, limit in force) at the start and at each change."""
    cpu_spiked_at: float | None
    wall_seconds: float
    pace: Pace | None
    handler_log: Path

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letter_reasons.values())

    @property
    def accounted_for(self) -> bool:
        return self.settled + self.dead_lettered == self.tasks

    @property
    def ok(self) -> bool:
        return self.accounted_for and (self.pace is None or self.pace.placed_twice == 0)

    def render(self) -> str:
        raised = f", {self.invocation_errors} raised" if self.invocation_errors else ""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.dead_letter_reasons.items()))
        lines = [
            f"Simulated campaign: {self.tasks} tasks, strategy {self.strategy}, "
            f"MAX_CPS {self.max_cps}, {self.wall_seconds:.1f} s",
            f"  outcomes: successful {self.successful}, failed {self.failed}, "
            f"rateLimited {self.rate_limited}, duplicates {self.duplicates}  "
            f"({self.deliveries} deliveries, {self.invocations} invocations{raised})",
            f"  tasks: {self.settled} done + {self.dead_lettered} dead-lettered"
            + (f" ({reasons})" if reasons else "")
            + (" = all" if self.accounted_for else f" of {self.tasks}: NOT ALL ACCOUNTED FOR"),
            f"  redeliveries: {self.redeliveries} of {self.redelivered_tasks} tasks sent back, "
            f"{self.duplicate_deliveries} duplicate deliveries"
            + (f"; Redis unavailable {self.redis_unavailable}x" if self.redis_unavailable else ""),
        ]
        if len(self.limit_changes) > 1:
            steps = ", ".join(f"{limit:g}/s from {at:.1f} s" for at, limit in self.limit_changes)
            spike = (
                f" (worker CPU raised at {self.cpu_spiked_at:.1f} s)"
                if self.cpu_spiked_at is not None
                else ""
            )
            lines.append(f"  limit in force: {steps}{spike}")
        if self.pace is None:
            lines.append("  pace: not measured (the worker does not serve GET /_calls)")
        else:
            pace = self.pace
            verdict = "within" if pace.max_in_any_second <= self.max_cps else "OVER"
            lines += [
                f"  worker: {pace.worker_calls} calls, {pace.placed_twice} tasks called twice",
                f"  pace: {pace.achieved_cps:.1f} calls/s over {pace.span_seconds:.1f} s "
                f"against a limit of {self.max_cps}/s; busiest 1 s: "
                f"{pace.max_in_any_second} calls ({verdict} the limit)",
            ]
            if pace.lag_p50 is not None and pace.lag_p99 is not None:
                lines.append(
                    f"  dial path: {pace.lag_p50 * 1000:.0f} ms from callId stamp to the worker "
                    f"(median), {pace.lag_p99 * 1000:.0f} ms (99th percentile)"
                )
        written = [str(p) for p in (self.pace.chart if self.pace else None, self.handler_log) if p]
        lines.append(f"  written: {', '.join(written)}")
        return "\n".join(lines)


# -- exact counting over call times --------------------------------------------------------


def max_in_window(times: Sequence[float], window: float = WINDOW_SECONDS) -> tuple[int, float]:
    """The most times within any half-open interval [x, x + window), and the first such x.

    Exact: the busiest interval can always be slid right until it starts at one of the times,
    so trying each time as a start finds it.
    """
    ordered = sorted(times)
    best, best_start, end = 0, ordered[0] if ordered else 0.0, 0
    for begin, start in enumerate(ordered):
        end = max(end, begin)
        while end < len(ordered) and ordered[end] < start + window:
            end += 1
        if end - begin > best:
            best, best_start = end - begin, start
    return best, best_start


def mean_rate(times: Sequence[float], window: float = WINDOW_SECONDS) -> float:
    """Calls per second: the mean, over the run after its first `window`, of the calls in the
    trailing `window`. Unlike calls divided by the run's length, it reads the limit for bursty
    and smooth paces alike (n bursts of `limit` one second apart span only n - 1 seconds)."""
    if not times:
        return 0.0
    start, end = min(times) + window, max(times)
    if end <= start:
        return len(times) / window
    # The integral of the trailing count over [start, end]: each call counts for the part of
    # [t, t + window) that lies inside.
    covered = sum(max(0.0, min(at + window, end) - max(at, start)) for at in times)
    return covered / (end - start) / window


def per_bucket(times: Sequence[float], origin: float, bucket: float, count: int) -> list[int]:
    """How many times fall in each of `count` buckets of `bucket` seconds from `origin`."""
    counts = [0] * count
    for at in times:
        index = math.floor((at - origin) / bucket)
        if 0 <= index < count:
            counts[index] += 1
    return counts


def trailing_series(
    times: Sequence[float], window: float = WINDOW_SECONDS
) -> tuple[list[float], list[int]]:
    """Calls in the trailing window (x - window, x] as a step function of x: the moments it
    changes and its value from each of them on."""
    # A call at t counts for t <= x < t + window; at a tie the leaving call goes first.
    changes = sorted([(at, 1) for at in times] + [(at + window, -1) for at in times])
    moments, values, count = [], [], 0
    for at, step in changes:
        count += step
        moments.append(at)
        values.append(count)
    return moments, values


# -- the synthetic campaign ----------------------------------------------------------------


def make_tasks(
    count: int,
    *,
    seed: int,
    run_id: str,
    invalid_rate: float = DEFAULT_INVALID_RATE,
    enriched_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Enriched dial tasks as the seed shows them, each with its own SQS message id.

    Every task is a distinct (campaignId, contactId, attempts); `invalid_rate` of them carry a
    phone number in local format instead of E.164, which the handler must refuse.
    """
    rng = random.Random(seed)
    invalid = set(rng.sample(range(count), round(count * invalid_rate)))
    subscribers = rng.sample(range(10**8), count)
    campaign_id = f"campaign-sim-{run_id}"
    campaign = seed_task()["campaign"]
    campaign.update(id=campaign_id, name="Simulated Donation Drive")
    stamp = (enriched_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    enriched = stamp.replace("+00:00", "Z")
    tasks = []
    for index, subscriber in enumerate(subscribers):
        phone = f"05{subscriber:08d}" if index in invalid else f"+9725{subscriber:08d}"
        tasks.append(
            {
                "messageId": f"msg-{run_id}-{index:06d}",
                "campaignId": campaign_id,
                "contactId": f"contact-{index:06d}",
                "phoneNumber": phone,
                "metadata": {"firstName": f"Donor{index}", "lastName": "Sim"},
                "attempts": 0,
                "campaign": campaign,
                "enrichedAt": enriched,
            }
        )
    return tasks


# -- the pipe ------------------------------------------------------------------------------


@dataclass
class _Message:
    task: dict[str, Any]
    message_id: str
    receive_count: int = 0
    duplicate_pending: bool = False


@dataclass
class _Tally:
    invocations: int = 0
    invocation_errors: int = 0
    deliveries: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    settled: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    redeliveries: int = 0
    redelivered: set[str] = field(default_factory=set)
    duplicate_deliveries: int = 0


def _retry_reasons(batch: Sequence[_Message], result: Mapping[str, Any] | None) -> dict[str, str]:
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


class _Pipe:
    """The source queue and its redrive policy, as the invocations see it.

    A message sent back becomes visible again after `visibility_timeout` seconds (the queue's
    visibility timeout, scaled down) and moves to the dead-letter queue once it has been
    received `max_receive_count` times.
    """

    def __init__(
        self,
        messages: Sequence[_Message],
        *,
        max_receive_count: int,
        visibility_timeout: float,
        on_settled: Callable[[int], None],
    ) -> None:
        self._visible = deque(messages)
        self._hidden: list[tuple[float, int, _Message]] = []
        self._hidden_order = 0
        self._max_receive_count = max_receive_count
        self._visibility_timeout = visibility_timeout
        self._on_settled = on_settled
        self._in_flight = 0
        self._changed = threading.Condition()
        self.tally = _Tally()

    def take(self, size: int) -> list[_Message] | None:
        """The next batch: waits while no message is visible but some may still come back;
        None once every message has left the queue for good."""
        with self._changed:
            while True:
                now = time.monotonic()
                while self._hidden and self._hidden[0][0] <= now:
                    self._visible.append(heapq.heappop(self._hidden)[2])
                if self._visible:
                    break
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

    def settle(self, batch: Sequence[_Message], result: Mapping[str, Any] | None) -> None:
        """Send the failed messages back (or to the dead-letter queue); delete the rest."""
        reasons = _retry_reasons(batch, result)
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

    def _hide(self, message: _Message) -> None:
        self._hidden_order += 1
        visible_at = time.monotonic() + self._visibility_timeout
        heapq.heappush(self._hidden, (visible_at, self._hidden_order, message))


@dataclass(frozen=True)
class _LambdaContext:
    """The part of the Lambda context the handler reads: the time left."""

    deadline: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "dialer-worker-simulation"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _invoke_until_drained(pipe: _Pipe, handler: HandlerFunction, batch_size: int) -> None:
    while (batch := pipe.take(batch_size)) is not None:
        context = _LambdaContext(time.monotonic() + LAMBDA_TIMEOUT_SECONDS)
        try:
            result: Mapping[str, Any] | None = handler([m.task for m in batch], context)
        except Exception:
            # What the pipe does when the function fails: the whole batch comes back.
            result = None
        pipe.settle(batch, result)


# -- the run -------------------------------------------------------------------------------


@dataclass
class _Monitor:
    """The health agent: samples the worker's health and the limit in force while the
    campaign runs, and raises the worker's CPU when the run asks for it."""

    stub: StubHandle
    on_health: Callable[[StubHealth], None]
    limit_in_force: Callable[[], float]
    started: float
    cpu_spike_at: float | None
    cpu_spike_percent: float
    stop: threading.Event = field(default_factory=threading.Event)
    health: list[tuple[float, StubHealth]] = field(default_factory=list)
    limits: list[tuple[float, float]] = field(default_factory=list)
    spiked_at: float | None = None
    problems: Counter[str] = field(default_factory=Counter)

    def run(self) -> None:
        while True:
            elapsed = time.time() - self.started
            spike_due = self.cpu_spike_at is not None and elapsed >= self.cpu_spike_at
            if spike_due and self.spiked_at is None:
                self.spiked_at = elapsed
                self._try("raise the worker's CPU", self._spike, elapsed)
            self._try("sample the worker's health", self._sample_health, elapsed)
            self._try("read the limit in force", self._sample_limit, elapsed)
            if self.stop.wait(MONITOR_INTERVAL_SECONDS):
                return

    def _try(self, what: str, action: Callable[[float], None], elapsed: float) -> None:
        # Best effort, like a real agent: a worker without /health (or a Redis that is down)
        # must not end the run; the first failure of each kind is shown.
        try:
            action(elapsed)
        except Exception as error:
            if not self.problems[what]:
                print(f"simulation: could not {what}: {error!r}", file=sys.stderr)
            self.problems[what] += 1

    def _spike(self, _elapsed: float) -> None:
        self.stub.set_health(cpu_percent=self.cpu_spike_percent)

    def _sample_health(self, elapsed: float) -> None:
        health = self.stub.health()
        self.health.append((elapsed, health))
        self.on_health(health)

    def _sample_limit(self, elapsed: float) -> None:
        self.limits.append((elapsed, float(self.limit_in_force())))


@contextlib.contextmanager
def _worker(config: SimulationConfig) -> Iterator[StubHandle]:
    if config.worker_url is not None:
        with RemoteStub(config.worker_url) as remote:
            yield remote
        return
    behaviour = Behaviour(delay_ms=config.worker_delay_ms, fail=config.worker_fail_rate)
    with WorkerStub(behaviour=behaviour) as stub:
        yield stub


@contextlib.contextmanager
def _handler_output_to(path: Path) -> Iterator[None]:
    """Send the handler's output to a file while the run lasts: its JSON logs and EMF lines
    (stdout), and the limiter's warnings, which outside Lambda would go to stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    limiter_logger = logging.getLogger(LIMITER_LOGGER)
    added: logging.Handler | None = None
    propagate = limiter_logger.propagate
    if not any(isinstance(h, StdoutHandler) for h in limiter_logger.handlers):
        added = StdoutHandler()
        added.setFormatter(JsonFormatter())
        limiter_logger.addHandler(added)
        limiter_logger.propagate = False
    try:
        with path.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            yield
    finally:
        if added is not None:
            limiter_logger.removeHandler(added)
            limiter_logger.propagate = propagate


def _redis_unavailable(handler_log: Path) -> int:
    """The RedisUnavailable metric summed over the EMF lines of the run."""
    total = 0
    with handler_log.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith('{"_aws"'):
                total += int(json.loads(line).get("RedisUnavailable", 0))
    return total


def _calls_of(stub: StubHandle, since: float) -> list[Call] | None:
    try:
        return stub.calls_since(since)
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return None


def _placed_twice(calls: Sequence[Call]) -> int:
    placed = Counter(
        (call.body.get("campaignId"), call.body.get("contactId"), call.body.get("attempts"))
        for call in calls
        if call.body is not None and call.outcome not in NOT_PLACED
    )
    return sum(1 for count in placed.values() if count > 1)


def limit_in_force(limiter: Limiter) -> float:
    """Calls per second in force now, as the limiter's own scripts compute it."""
    return float(limiter.peek().limit)


@contextlib.contextmanager
def _configured(handler_module: Any) -> Iterator[None]:
    """Put the handler back on its own environment after the run, as at import."""
    try:
        yield
    finally:
        handler_module.configure()


def run_simulation(config: SimulationConfig, hooks: Hooks | None = None) -> Summary:
    """Run one simulated campaign and return its summary (the chart is written to `out`).

    The handler module is configured for the run and then from `os.environ` again: do not
    run this while other code invokes the handler in the same process.
    """
    hooks = hooks or Hooks()
    # Imported here: its import configures it from os.environ, which the run then replaces.
    from dialer_lambda import handler as handler_module

    run_id = uuid.uuid4().hex[:8]
    tasks = make_tasks(
        config.tasks, seed=config.seed, run_id=run_id, invalid_rate=config.invalid_rate
    )
    duplicated = set(
        random.Random(config.seed + 1).sample(
            range(config.tasks), round(config.tasks * config.duplicate_rate)
        )
    )
    messages = [
        _Message(task, task["messageId"], duplicate_pending=index in duplicated)
        for index, task in enumerate(tasks)
    ]
    handler_log = config.out / f"handler-{config.strategy}.log"
    progress = _progress_bar(config)
    pipe = _Pipe(
        messages,
        max_receive_count=config.max_receive_count,
        visibility_timeout=config.visibility_timeout,
        on_settled=progress.update,
    )

    with _worker(config) as stub, _handler_output_to(handler_log), _configured(handler_module):
        env = config.handler_env(stub.url, config.key_prefix or f"cps-sim-{run_id}")
        limiter = handler_module.configure(env).limiter

        def report(health: StubHealth) -> None:
            limiter.report_health(cpu=health.cpu_percent, answer_rate=health.answer_rate)

        started = time.time()
        monitor = _Monitor(
            stub,
            on_health=hooks.on_health or report,
            limit_in_force=hooks.limit_in_force or (lambda: limit_in_force(limiter)),
            started=started,
            cpu_spike_at=config.cpu_spike_at,
            cpu_spike_percent=config.cpu_spike_percent,
        )
        monitor_thread = threading.Thread(target=monitor.run, name="sim-monitor", daemon=True)
        invocations = [
            threading.Thread(
                target=_invoke_until_drained,
                args=(pipe, handler_module.handler, config.batch_size),
                name=f"sim-invocation-{n}",
                daemon=True,
            )
            for n in range(config.concurrency)
        ]
        monitor_thread.start()
        for thread in invocations:
            thread.start()
        for thread in invocations:
            thread.join()
        monitor.stop.set()
        monitor_thread.join()
        wall = time.time() - started
        calls = _calls_of(stub, started)
    progress.close()

    tally = pipe.tally
    return Summary(
        strategy=config.strategy,
        max_cps=config.max_cps,
        tasks=config.tasks,
        invocations=tally.invocations,
        invocation_errors=tally.invocation_errors,
        deliveries=tally.deliveries,
        successful=tally.outcomes["successful"],
        failed=tally.outcomes["failed"],
        rate_limited=tally.outcomes["rateLimited"],
        duplicates=tally.outcomes["duplicates"],
        settled=tally.settled,
        dead_letter_reasons=dict(tally.dead_letter_reasons),
        redeliveries=tally.redeliveries,
        redelivered_tasks=len(tally.redelivered),
        duplicate_deliveries=tally.duplicate_deliveries,
        redis_unavailable=_redis_unavailable(handler_log),
        limit_changes=_changes(monitor.limits),
        cpu_spiked_at=monitor.spiked_at,
        wall_seconds=wall,
        pace=None if calls is None else _pace(config, calls, started, monitor),
        handler_log=handler_log,
    )


def _changes(samples: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    changes: list[tuple[float, float]] = []
    for at, value in samples:
        if not changes or changes[-1][1] != value:
            changes.append((at, value))
    return tuple(changes)


class _Progress:
    """A tqdm bar on stderr, or nothing."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _progress_bar(config: SimulationConfig) -> _Progress:
    if not config.progress:
        return _Progress(None)
    from tqdm import tqdm

    return _Progress(
        tqdm(
            total=config.tasks,
            desc=f"{config.strategy} @ {config.max_cps}/s",
            unit="task",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    )


def _lags(calls: Sequence[Call]) -> list[float]:
    """Arrival minus the epoch milliseconds that end each callId, where there are any."""
    lags = []
    for call in calls:
        stamp = (call.call_id or "").rpartition("-")[2]
        if stamp.isdigit():
            lags.append(call.at - int(stamp) / 1000.0)
    return sorted(lags)


def _pace(
    config: SimulationConfig, calls: Sequence[Call], started: float, monitor: _Monitor
) -> Pace:
    times = sorted(call.at for call in calls)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    # Whole seconds of the clock as the origin, so that the fixed window's boundaries (whole
    # seconds of the Redis clock; the same clock for memory:// and a local Redis) fall on ticks.
    origin = math.floor(started)
    busiest, busiest_start = max_in_window(times)
    lags = _lags(calls)
    chart = None
    if times:
        offset = started - origin
        chart = write_chart(
            config.out / f"calls-{config.strategy}.png",
            times=times,
            origin=origin,
            max_cps=config.max_cps,
            title=f"{config.strategy} strategy: {len(times)} calls at the worker, "
            f"MAX_CPS {config.max_cps}",
            limits=[(offset + at, limit) for at, limit in monitor.limits],
            cpu=[(offset + at, health.cpu_percent) for at, health in monitor.health],
            cpu_spike=None if monitor.spiked_at is None else offset + monitor.spiked_at,
        )
    return Pace(
        worker_calls=len(times),
        placed_twice=_placed_twice(calls),
        span_seconds=span,
        achieved_cps=mean_rate(times),
        lag_p50=lags[len(lags) // 2] if lags else None,
        lag_p99=lags[min(len(lags) - 1, len(lags) * 99 // 100)] if lags else None,
        max_in_any_second=busiest,
        busiest_second_start=busiest_start - origin if times else 0.0,
        chart=chart,
    )


# -- the chart -----------------------------------------------------------------------------


def write_chart(
    path: Path,
    *,
    times: Sequence[float],
    origin: float,
    max_cps: int,
    title: str,
    limits: Sequence[tuple[float, float]] = (),
    cpu: Sequence[tuple[float, float]] = (),
    cpu_spike: float | None = None,
) -> Path:
    """A PNG: calls per 100 ms (top) and calls in the trailing second (bottom) against the
    limit. `limits` and `cpu` are (seconds since `origin`, value) samples, drawn when given."""
    # The object API on the Agg canvas: no pyplot, no global backend, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = [at - origin for at in sorted(times)]
    buckets = math.floor(ordered[-1] / CHART_BUCKET_SECONDS) + 1
    counts = per_bucket(ordered, 0.0, CHART_BUCKET_SECONDS, buckets)
    edges = [n * CHART_BUCKET_SECONDS for n in range(buckets + 1)]
    moments, trailing = trailing_series(ordered)
    busiest, busiest_start = max_in_window(ordered)
    bucket_limit = max_cps * CHART_BUCKET_SECONDS

    figure = Figure(figsize=(12, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    figure.suptitle(title)

    top.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.7, label="calls per 100 ms")
    top.axvspan(
        busiest_start,
        busiest_start + WINDOW_SECONDS,
        color="orange",
        alpha=0.25,
        label=f"busiest 1 s: {busiest} calls",
    )
    top.annotate(
        f"busiest 1 s: {busiest} calls (limit {max_cps})",
        xy=(busiest_start + WINDOW_SECONDS / 2, max(counts)),
        xytext=(0, 6),
        textcoords="offset points",
        ha="center",
        fontsize=9,
    )
    top.set_ylabel("calls per 100 ms")
    top.set_ylim(0, max(max(counts), bucket_limit) * 1.25)

    bottom.step(
        moments,
        trailing,
        where="post",
        color="tab:purple",
        linewidth=1,
        label="calls in the last 1 s",
    )
    bottom.set_ylabel("calls in the last 1 s")
    bottom.set_xlabel(f"seconds since {datetime.fromtimestamp(origin, UTC):%H:%M:%S} UTC")
    bottom.set_ylim(0, max(busiest, max_cps) * 1.2)

    for axis, scale, unit in ((top, CHART_BUCKET_SECONDS, "per 100 ms"), (bottom, 1.0, "/s")):
        if limits:
            axis.step(
                [at for at, _ in limits],
                [value * scale for _, value in limits],
                where="post",
                color="red",
                label=f"limit in force {unit}",
            )
        else:
            axis.axhline(
                max_cps * scale,
                color="red",
                linestyle="--",
                label=f"limit {max_cps * scale:g} {unit}",
            )
        if cpu_spike is not None:
            axis.axvline(cpu_spike, color="black", linestyle=":", label="worker CPU raised")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    if cpu and len({value for _, value in cpu}) > 1:
        cpu_axis = bottom.twinx()
        cpu_axis.step(
            [at for at, _ in cpu],
            [value for _, value in cpu],
            where="post",
            color="tab:gray",
            linewidth=1,
            label="worker CPU %",
        )
        cpu_axis.set_ylim(0, 100)
        cpu_axis.set_ylabel("worker CPU %")
        cpu_axis.legend(loc="center right", fontsize=8)

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


# -- command line --------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> SimulationConfig:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.simulate",
        description="Simulate a campaign: the real handler in many concurrent invocations, "
        "against memory:// and a worker stub (or a real Redis and worker).",
    )
    add = parser.add_argument
    add("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    add("--max-cps", type=int, default=DEFAULT_MAX_CPS, help="MAX_CPS for the handler")
    add("--tasks", type=int, default=DEFAULT_TASKS)
    add("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    add("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="concurrent invocations")
    add("--worker-delay-ms", type=float, default=DEFAULT_WORKER_DELAY_MS)
    add("--worker-fail-rate", type=float, default=DEFAULT_WORKER_FAIL_RATE)
    add(
        "--invalid-rate",
        type=float,
        default=DEFAULT_INVALID_RATE,
        help="fraction of tasks whose phone number is not E.164",
    )
    add(
        "--duplicate-rate",
        type=float,
        default=DEFAULT_DUPLICATE_RATE,
        help="fraction of messages the queue delivers once more after success",
    )
    add(
        "--max-receive-count",
        type=int,
        default=DEFAULT_MAX_RECEIVE_COUNT,
        help="receives before a message moves to the dead-letter queue",
    )
    add(
        "--visibility-timeout",
        type=float,
        default=DEFAULT_VISIBILITY_TIMEOUT,
        help="seconds before a message sent back is visible again (scaled down)",
    )
    add(
        "--max-wait",
        type=float,
        default=None,
        help="RATE_LIMIT_MAX_WAIT_SECONDS (default: the handler's)",
    )
    add("--redis-url", default=MEMORY_URL)
    add("--key-prefix", default=None, help="CPS_KEY_PREFIX (default: one of the run's own)")
    add("--worker-url", default=None, help="a running worker (default: a stub in this process)")
    add("--out", type=Path, default=DEFAULT_OUT, help="where the chart and the log go")
    add("--seed", type=int, default=DEFAULT_SEED)
    add(
        "--cpu-spike-at",
        type=float,
        default=None,
        metavar="SECONDS",
        help="raise the worker's simulated CPU this far into the run",
    )
    add("--cpu-spike-percent", type=float, default=DEFAULT_CPU_SPIKE_PERCENT)
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        return SimulationConfig(
            strategy=cast(StrategyName, args.strategy),
            max_cps=args.max_cps,
            tasks=args.tasks,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            worker_delay_ms=args.worker_delay_ms,
            worker_fail_rate=args.worker_fail_rate,
            invalid_rate=args.invalid_rate,
            duplicate_rate=args.duplicate_rate,
            max_receive_count=args.max_receive_count,
            visibility_timeout=args.visibility_timeout,
            max_wait=args.max_wait,
            redis_url=args.redis_url,
            key_prefix=args.key_prefix,
            worker_url=args.worker_url,
            out=args.out,
            seed=args.seed,
            cpu_spike_at=args.cpu_spike_at,
            cpu_spike_percent=args.cpu_spike_percent,
            progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))


def main(
    argv: Sequence[str] | None = None, *, hooks: Hooks | None = None, out: TextIO | None = None
) -> Summary:
    """Run the simulation the command line asks for, print its summary, and return it."""
    summary = run_simulation(_parse_args(argv), hooks)
    print(summary.render(), file=out or sys.stdout)
    return summary


if __name__ == "__main__":
    raise SystemExit(0 if main().ok else 1)
