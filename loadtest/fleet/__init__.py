"""A fleet of dialer containers through a Redis outage: ``python -m loadtest.fleet``.

Each container is a process of its own (``python -m loadtest.fleet.container``) with a
`dialer_lambda.Dialer` built as the Lambda builds one, invoking it on batches of 10 unique tasks
that arrive at twice MAX_CPS in all; all of them dial one worker stub in its own process, which
stamps each arrival, on a redis-server the run starts. Redis is stopped (SIGSTOP) or killed for
a while, then resumed or started again empty; `Figures` measures what the worker saw: the
busiest second while Redis was away and after it returned, the rate while it was away, the
``cps:<ts>`` counters around the return, and whether anybody was called twice.
"""

from .config import FAULTS, KILL, STALL, FleetConfig
from .figures import FLOOR, OUTAGE_BOUND, SETTLE_SECONDS, UNUSED_BOUND, Figures, Second
from .run import OutageRun, run_outage

__all__ = [
    "FAULTS",
    "FLOOR",
    "KILL",
    "OUTAGE_BOUND",
    "SETTLE_SECONDS",
    "STALL",
    "UNUSED_BOUND",
    "Figures",
    "FleetConfig",
    "OutageRun",
    "Second",
    "run_outage",
]
