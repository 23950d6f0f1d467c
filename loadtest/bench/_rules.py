"""What combining rules costs: one decision over three rules (the trunk's paced CPS, a
campaign's CPS and its concurrency) against one over the trunk's rule alone, in Redis CPU per
decision (INFO commandstats of the bench's own redis-server) and in throughput."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import redis

from cps_limiter import Concurrency, FixedWindow, Limiter, PacedWindow, Rule

from ._measure import Comparison, Contender, Session

UNLIMITED = 10**6
CPU_CALLS = 300
"""Decisions per sample of Redis CPU: enough for a stable mean of a few microseconds each."""
LEASE_TTL = 0.05
"""Seconds a benchmark lease lives: the lease set stays at the size of a realistic campaign
(a few hundred live leases) instead of growing through the run."""
CAMPAIGN = "campaign:bench"


def rules(session: Session) -> None:
    trunk = PacedWindow(UNLIMITED)
    limiter = session.limiter("rules", trunk)
    one = [Rule(trunk)]
    three = [
        Rule(trunk),
        Rule(FixedWindow(UNLIMITED), CAMPAIGN),
        Rule(Concurrency(UNLIMITED, ttl=LEASE_TTL), CAMPAIGN),
    ]
    ids = (f"call-{n}" for n in itertools.count())
    decisions: dict[str, Callable[[], object]] = {
        "acquire, one rule (PacedWindow)": limiter.acquire,
        "acquire_all, one rule": lambda: limiter.acquire_all(one),
        "acquire_all, three rules (+ campaign CPS + lease)": lambda: limiter.acquire_all(
            three, leases=[next(ids)]
        ),
    }
    baseline = "acquire_all, one rule"
    session.add(
        Comparison(
            "rules",
            "One decision over several rules, sync, one client",
            "decisions/s",
            baseline,
            [Contender(name, session.timed(call)) for name, call in decisions.items()],
            session.rounds,
        )
    )
    admin = redis.Redis.from_url(session.url)
    session.stack.callback(admin.close)
    session.add(
        Comparison(
            "rules_cpu",
            "Redis CPU per decision over several rules (INFO commandstats, EVALSHA)",
            "µs/decision",
            baseline,
            [Contender(name, _redis_cpu(admin, limiter, call)) for name, call in decisions.items()],
            session.rounds,
            higher_is_better=False,
        )
    )


def _redis_cpu(
    admin: redis.Redis, limiter: Limiter, decide: Callable[[], object]
) -> Callable[[], float]:
    """A sample: the server's mean microseconds per EVALSHA over `CPU_CALLS` decisions."""

    def sample() -> float:
        decide()  # the script loaded, before the count starts
        admin.config_resetstat()
        for _ in range(CPU_CALLS):
            decide()
        stats = admin.info("commandstats")
        return float(stats["cmdstat_evalsha"]["usec_per_call"])

    return sample
