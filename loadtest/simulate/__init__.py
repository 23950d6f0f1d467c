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

from loadtest.tasks import make_tasks

from .chart import write_chart
from .config import STRATEGIES, Hooks, SimulationConfig, StrategyName
from .monitor import limit_in_force
from .pace import Pace, max_in_window, mean_rate, per_bucket, trailing_series
from .run import build_dialer, main, run_simulation
from .summary import Summary

__all__ = [
    "STRATEGIES",
    "Hooks",
    "Pace",
    "SimulationConfig",
    "StrategyName",
    "Summary",
    "build_dialer",
    "limit_in_force",
    "main",
    "make_tasks",
    "max_in_window",
    "mean_rate",
    "per_bucket",
    "run_simulation",
    "trailing_series",
    "write_chart",
]
