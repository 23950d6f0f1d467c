"""The load test: ``python -m loadtest.run`` (``make loadtest``).

Starts a redis-server and the worker stub, runs Locust headless on ``loadtest/locustfile.py``
for a bounded time with several worker processes, then checks the outcome from the stub's
record of every call it received and from Redis:

- the sliding window and the token bucket: no interval of one second holds more calls than the
  limit (see ``--jitter``), after the warm-up (``--warmup``);
- the fixed window and the dialer (which paces with the fixed window): no aligned second
  (window) after the warm-up holds more calls than the limit;
- every scenario: utilisation, the calls over the limit's capacity in the run's whole seconds
  (all but the first and the last), at least 98% while the demand is twice the limit;
- Redis, sampled every 50 ms during the run: the fixed window's counters never exceed the
  limit, and the sliding window's log never holds more than the limit in the last second.

It writes Locust's CSV and HTML reports, ``loadtest.json``, ``loadtest.md`` and a chart of
calls per second against the limit (``loadtest.png``) to ``loadtest/results/``, prints the
checks, and exits with 1 when one fails.

The parts: ``_locust`` runs Locust, ``_monitor`` samples Redis meanwhile, ``_checks`` holds the
calls the stub received against the limit, ``_report`` writes the results down.
"""

from ._checks import ScenarioResult, burst_limit, checks_for, scenario_result, utilisation

__all__ = ["ScenarioResult", "burst_limit", "checks_for", "scenario_result", "utilisation"]
