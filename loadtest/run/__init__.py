"""The load test: ``python -m loadtest.run`` (``make loadtest``, options in ``ARGS``).

Starts a redis-server and the worker stub (a process of its own, which stamps each call's
arrival), runs Locust headless on ``loadtest/locustfile.py`` for a bounded time with several
worker processes, then checks the outcome from the stub's record of every call and from Redis.
``--max-cps`` takes several values and ``--strategy`` (the dialer's ``CPS_STRATEGY``, by default
its own default) several names: each pair is one run, in a folder of its own, and a summary
table holds the dialer's figures side by side.

- The dialer, as a carrier counts its calls, strictly: exact sweeps over every arrival at the
  stub, with no allowance and no warm-up left out. No interval of 1 s holds more than MAX_CPS;
  no interval of 100 ms more than a tenth of it (rounded up) plus two; the calls over MAX_CPS's
  capacity in the steady part (the whole seconds between the first and the last) reach 95%;
  and Redis's window counters (``cps:<unix_ts>``) never exceed MAX_CPS.
- The limiter scenarios, against what each strategy promises: the fixed window per aligned
  second, the sliding window and the token bucket over every interval of 1 s less an allowance
  for arrival jitter (``--jitter``), both after the warm-up (``--warmup``); utilisation at least
  98%; Redis's fixed-window counters and sliding-window log never above the limit. Their strict
  figures at the worker are printed beside, as information.

Users start nothing new after ``--duration``, and Locust runs on a few seconds so that the
calls in flight land before its teardown. It writes Locust's CSV and HTML reports,
``loadtest.json``, ``loadtest.md``, ``calls.csv`` (each arrival and its sender's stamp) and a
chart of calls per second against the limit (``loadtest.png``) to ``loadtest/results/``,
prints the checks, and exits with 1 when one fails.

The parts: ``_locust`` runs Locust, ``_monitor`` samples Redis meanwhile, ``_checks`` holds the
calls the stub received against the limit, ``_report`` writes the results down.
"""

from ._checks import ScenarioResult, burst_limit, checks_for, scenario_result, utilisation

__all__ = ["ScenarioResult", "burst_limit", "checks_for", "scenario_result", "utilisation"]
