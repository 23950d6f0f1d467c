"""What one simulated run is asked to do: `SimulationConfig`, `Hooks`, and the command line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final, cast

from dialer_lambda import Settings
from dialer_lambda._config import DEFAULT_MAX_CPS as DEFAULT_DIALER_MAX_CPS
from dialer_lambda._config import STRATEGIES as DIALER_STRATEGIES
from dialer_lambda._config import Strategy
from loadtest.tasks import BATCH, DEFAULT_INVALID_RATE
from loadtest.worker_stub import StubHealth
from loadtest.worker_stub.carrier import CarrierLimit

from .carrier import add_carrier_arguments, carrier_of

StrategyName = Strategy
STRATEGIES: Final[tuple[StrategyName, ...]] = DIALER_STRATEGIES
"""The dialer's CPS_STRATEGY values."""
DEFAULT_STRATEGY: Final = cast(
    StrategyName, next(field.default for field in fields(Settings) if field.name == "strategy")
)
"""The dialer's own default (CPS_STRATEGY unset): the demo shows what a deployment gets."""
DEFAULT_BATCH_SIZE: Final = 10
MAX_BATCH_SIZE: Final = BATCH
# The dialer's own default (the seed's): low enough that the pace, not the one process that
# hosts every simulated invocation, is what limits it; at 200 that process's own jitter on the
# way to the stub starts to show in the 100-ms figure (docs/demo.md).
DEFAULT_MAX_CPS: Final = DEFAULT_DIALER_MAX_CPS
DEMAND_FACTOR: Final = 2
"""The invocations together ask for this many seconds' worth of permits at once, so that
the limiter, not the number of invocations, sets the pace."""
RUN_SECONDS: Final = 15
"""Seconds of calls at the limit that the default number of tasks makes."""


def tasks_for(max_cps: int) -> int:
    """The default number of tasks at `max_cps`: `RUN_SECONDS` of calls at the limit."""
    return RUN_SECONDS * max_cps


def concurrency_for(max_cps: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """The default number of concurrent invocations at `max_cps`: enough batches in flight to
    ask for `DEMAND_FACTOR` times the limit at once."""
    # A batch size below 1 is refused by `SimulationConfig`, which names it.
    return math.ceil(DEMAND_FACTOR * max_cps / max(batch_size, 1))


DEFAULT_TASKS: Final = tasks_for(DEFAULT_MAX_CPS)
DEFAULT_CONCURRENCY: Final = concurrency_for(DEFAULT_MAX_CPS)
DEFAULT_WORKER_DELAY_MS: Final = 50.0
DEFAULT_WORKER_FAIL_RATE: Final = 0.01
DEFAULT_DUPLICATE_RATE: Final = 0.01
DEFAULT_MAX_RECEIVE_COUNT: Final = 5  # the redrive count AWS advises for a pipe's source queue
DEFAULT_SEED: Final = 7
DEFAULT_OUT: Final = Path("demo-output")
DEFAULT_CPU_SPIKE_PERCENT: Final = 95.0
MEMORY_URL: Final = "memory://"
# The real queue's visibility timeout is 90 s or more (six times the pipe's timeout): scaled
# down so that the demo ends soon. What matters is its ratio to the backlog: five receives
# must outlast the time the limit needs to work through the tasks in flight, or tasks that
# were merely paced land in the dead-letter queue (at 1 s, dozens do in the default run).
DEFAULT_VISIBILITY_TIMEOUT: Final = 3.0
SERVICE_NAME: Final = "dialer-worker-simulation"
DEFAULT_MAX_CONCURRENT_CALLS: Final = 100
"""Each campaign's maxConcurrentCalls when calls last (--call-seconds): the seed's example."""


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
    """A worker that is already running; None starts the stub in a process of its own, so
    that the moments it stamps on arrivals are not delayed by this process's threads."""
    out: Path = DEFAULT_OUT
    seed: int = DEFAULT_SEED
    cpu_spike_at: float | None = None
    """Seconds into the run at which the worker's simulated CPU jumps to `cpu_spike_percent`."""
    cpu_spike_percent: float = DEFAULT_CPU_SPIKE_PERCENT
    progress: bool = True
    campaigns: int = 1
    """Campaigns the tasks are dealt to, in turn."""
    call_seconds: float | None = None
    """How long each answered call lasts; when set, each campaign has `max_concurrent_calls`
    and the calls free their leases as they end. None: calls take no time, no limit."""
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    carrier: CarrierLimit | None = None
    """The carrier behind the stub, which refuses what is over its limit."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        for name in (
            "max_cps",
            "tasks",
            "concurrency",
            "max_receive_count",
            "campaigns",
            "max_concurrent_calls",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        for name in ("worker_fail_rate", "invalid_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
        for name in (
            "worker_delay_ms",
            "visibility_timeout",
            "max_wait",
            "cpu_spike_at",
            "call_seconds",
        ):
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
        if self.call_seconds is not None:
            # The run's stub frees each lease when its call ends, as docs/dialer.md asks.
            env["WORKER_FREES_LEASES"] = "true"
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


def parse_args(argv: Sequence[str] | None) -> SimulationConfig:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.simulate",
        description="Simulate a campaign: the real handler in many concurrent invocations, "
        "against memory:// and a worker stub (or a real Redis and worker).",
    )
    add = parser.add_argument
    add("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    add("--max-cps", type=int, default=DEFAULT_MAX_CPS, help="MAX_CPS for the handler")
    add("--tasks", type=int, default=None, help=f"default: {RUN_SECONDS} s at MAX_CPS")
    add("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    add(
        "--concurrency",
        type=int,
        default=None,
        help=f"concurrent invocations (default: {DEMAND_FACTOR}x MAX_CPS in batches)",
    )
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
    add("--worker-url", default=None, help="a running worker (default: a stub process)")
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
    add("--campaigns", type=int, default=1, help="campaigns the tasks are dealt to, in turn")
    add(
        "--call-seconds",
        type=float,
        default=None,
        help="calls last this long and free their lease as they end; each campaign then has "
        "maxConcurrentCalls (chart: calls in progress per campaign)",
    )
    add(
        "--max-concurrent-calls",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_CALLS,
        help="each campaign's maxConcurrentCalls with --call-seconds",
    )
    add_carrier_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return SimulationConfig(
            strategy=cast(StrategyName, args.strategy),
            max_cps=args.max_cps,
            tasks=tasks_for(args.max_cps) if args.tasks is None else args.tasks,
            batch_size=args.batch_size,
            concurrency=(
                concurrency_for(args.max_cps, args.batch_size)
                if args.concurrency is None
                else args.concurrency
            ),
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
            campaigns=args.campaigns,
            call_seconds=args.call_seconds,
            max_concurrent_calls=args.max_concurrent_calls,
            carrier=carrier_of(args),
        )
    except ValueError as error:
        parser.error(str(error))
