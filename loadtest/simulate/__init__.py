"""A campaign, simulated end to end: ``python -m loadtest.simulate`` (``make demo``).

The real handler (`dialer_lambda.handler`) runs in many concurrent invocations, in threads, over
synthetic dial tasks, against ``memory://`` and the worker stub started in a process of its own
(or a real Redis and worker given by ``--redis-url`` and ``--worker-url``). By default the
strategy is the dialer's own default, the invocations ask for twice MAX_CPS permits at once,
and the tasks last about 15 seconds at the limit.

A small model of the pipe sits in front of it: a queue of messages taken in batches of 10;
the tasks a result lists in ``batchItemFailures`` (or the whole batch, when the handler raises)
become visible again after a (scaled-down) visibility timeout, until their receive count reaches
the redrive limit and they move to the dead-letter queue. A few messages that were handled are
delivered once more, as SQS standard queues do now and then, to show that nobody is called twice.

A health agent reads the worker's own health every 100 ms and reports it to the handler's
limiter, whose adaptive policy cuts the pace; ``--cpu-spike-at`` raises the worker's CPU
mid-run to show it. `Hooks` replaces the agent. With ``--carrier-limit`` the stub's carrier
refuses what is over its limit, the agent relays the refusals to the limiter (AIMD), and the
summary and ``carrier-<strategy>.png`` show the refusals, the carrier's limit used and the
recovery (`carrier`).

The summary counts the outcomes, the redeliveries, and the pace as a carrier sees it, each
figure against its target (`targets`): the most calls that arrived at the worker within any
interval of 1 s and of 100 ms (swept exactly over every arrival, not per aligned second), the
calls per second while demand exceeded the limit, and the highest per-second counter
(``cps:<ts>``) the limiter kept in Redis. A PNG chart shows the calls per 100 ms against the
limit and the 100-ms target; ``python -m loadtest.simulate.compare`` draws two strategies side
by side.
"""

from loadtest.tasks import make_tasks

from .chart import Trace, write_chart, write_side_by_side
from .config import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    Hooks,
    SimulationConfig,
    StrategyName,
    concurrency_for,
    tasks_for,
)
from .counters import CounterWatch
from .monitor import limit_in_force
from .pace import (
    Pace,
    max_in_window,
    mean_rate,
    mean_trailing,
    per_bucket,
    steady_part,
    trailing_series,
)
from .run import build_dialer, main, run_simulation
from .summary import Summary
from .targets import Figure, pacing_figures, tenth_target

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "CounterWatch",
    "Figure",
    "Hooks",
    "Pace",
    "SimulationConfig",
    "StrategyName",
    "Summary",
    "Trace",
    "build_dialer",
    "concurrency_for",
    "limit_in_force",
    "main",
    "make_tasks",
    "max_in_window",
    "mean_rate",
    "mean_trailing",
    "pacing_figures",
    "per_bucket",
    "run_simulation",
    "steady_part",
    "tasks_for",
    "tenth_target",
    "trailing_series",
    "write_chart",
    "write_side_by_side",
]
