"""Locust users that pace calls through cps_limiter, and users that run batches through the dialer.

`python -m loadtest.run` starts Redis and the worker stub and runs this file headless; it passes
its settings in ``LOADTEST_*`` environment variables (see `Settings`), which forked worker
processes inherit. Each scenario dials the stub under its own campaign id, so that the run can
count the calls of each scenario in the stub's record.

- `FixedWindowUser`, `SlidingWindowUser`, `TokenBucketUser`: each attempt takes one permit
  through `cps_limiter.Limiter` (waiting up to ``LOADTEST_MAX_WAIT`` for a reserved slot) and,
  when granted, sends the dial to the stub. Together the users of a scenario offer
  ``LOADTEST_DEMAND`` times the limit.
- `DialerUser`: runs batches of 10 tasks through one `dialer_lambda.Dialer` per process, as
  the Lambda's entry point does, with ``CPS_STRATEGY`` from ``LOADTEST_STRATEGY`` (unset: the
  dialer's own default).

Locust monkey-patches the standard library with gevent before this file is imported, so the
sync redis-py client, httpx, ``time.sleep`` and the dialer's thread pool all yield to other
users instead of blocking the process. The limiter reports to Locust through
``environment.events.request``, as Locust documents for systems other than HTTP.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from locust import FastHttpUser, User, constant_throughput, events, task
from locust.env import Environment

from cps_limiter import Decision, Limiter, Strategy
from dialer_lambda import Dialer, strategy_for
from dialer_lambda import Settings as DialerSettings
from loadtest._tasks import BATCH, TaskFactory

REQUEST_TYPE = "cps_limiter"


@dataclass(frozen=True)
class Settings:
    """What `loadtest.run` passes down, from ``LOADTEST_*`` variables."""

    redis_url: str
    worker_url: str
    limit: int
    demand: float
    users: int
    dialer_users: int
    max_wait: float
    run_id: str
    duration: float
    """Seconds from the start after which users start nothing new."""
    dialer_strategy: str
    """The dialer's ``CPS_STRATEGY``; empty for its default."""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            redis_url=env.get("LOADTEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            worker_url=env.get("LOADTEST_WORKER_URL", "http://127.0.0.1:3000"),
            limit=int(env.get("LOADTEST_LIMIT", "50")),
            demand=float(env.get("LOADTEST_DEMAND", "2")),
            users=int(env.get("LOADTEST_USERS", "10")),
            dialer_users=int(env.get("LOADTEST_DIALER_USERS", "4")),
            max_wait=float(env.get("LOADTEST_MAX_WAIT", "0.25")),
            run_id=env.get("LOADTEST_RUN_ID", uuid.uuid4().hex[:8]),
            duration=float(env.get("LOADTEST_DURATION", "inf")),
            dialer_strategy=env.get("LOADTEST_STRATEGY", ""),
        )

    def prefix(self, scenario: str) -> str:
        return f"lt-{self.run_id}-{scenario}"

    def campaign(self, scenario: str) -> str:
        """The campaign id under which a scenario's calls reach the stub."""
        return self.prefix(scenario)

    def strategy(self, scenario: str) -> Strategy:
        """The dialer's strategy of that name at the limit (the token bucket with a burst of 1:
        no one-second interval then holds more than the rate)."""
        return strategy_for(
            DialerSettings.from_env({"CPS_STRATEGY": scenario, "MAX_CPS": str(self.limit)})
        )

    def dialer_env(self) -> dict[str, str]:
        """The dialer's environment for this run."""
        return {
            "REDIS_URL": self.redis_url,
            "NODE_WORKER_URL": self.worker_url,
            "MAX_CPS": str(self.limit),
            "CPS_STRATEGY": self.dialer_strategy,
            "CPS_KEY_PREFIX": self.prefix("dialer"),
            "IDEMPOTENCY_KEY_PREFIX": f"{self.prefix('dialer')}:claim",
            # Per-task log lines at this rate would be most of the run's work and output.
            "LOG_LEVEL": "ERROR",
        }


SETTINGS = Settings.from_env()
_traffic_ends = math.inf
# httpx logs every request at INFO: thousands of lines a minute in Locust's log.
logging.getLogger("httpx").setLevel(logging.WARNING)
_limiters: dict[str, Limiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(scenario: str) -> Limiter:
    """One limiter (one connection pool) per scenario and process, shared by its users."""
    with _limiters_lock:
        if scenario not in _limiters:
            _limiters[scenario] = Limiter.from_url(
                SETTINGS.redis_url, SETTINGS.strategy(scenario), prefix=SETTINGS.prefix(scenario)
            )
        return _limiters[scenario]


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _start_the_clock(environment: Environment, **kwargs: Any) -> None:
    global _traffic_ends
    _traffic_ends = time.monotonic() + SETTINGS.duration
    # One Locust process hosts many simulated containers and Locust's own statistics: its
    # full collections pause every container at once for tens of milliseconds, and the calls
    # due meanwhile then leave together. A Lambda container's heap is one batch's; what is
    # set up by now is kept out of the collector's way, and the run's own garbage (no cycles
    # on the dial path) goes with reference counting.
    gc.freeze()
    gc.disable()


def traffic_over() -> bool:
    """Past the run's duration, users start nothing new: the calls already granted then land
    before Locust's teardown, which stalls the process long enough to bunch any still waiting
    for their moment into a burst the dialer never sent."""
    return time.monotonic() >= _traffic_ends


class LimiterClient:
    """A Locust client for cps_limiter: each decision is a request event named after its
    outcome, timed without the wait for a reserved slot (that is pacing, not latency)."""

    def __init__(self, limiter: Limiter, environment: Environment, scenario: str) -> None:
        self.limiter = limiter
        self.environment = environment
        self.scenario = scenario

    def acquire(self, permits: int = 1, *, max_wait: float = 0.0) -> Decision | None:
        started = time.perf_counter()
        decision: Decision | None = None
        exception: Exception | None = None
        try:
            decision = self.limiter.acquire(permits=permits, max_wait=max_wait)
        except Exception as error:
            exception = error
        elapsed = time.perf_counter() - started - (decision.waited if decision else 0.0)
        if decision is None:
            outcome = "error"
        elif decision.fail_open:
            outcome = "fail open"
            exception = RuntimeError("Redis unavailable: the decision failed open")
        else:
            outcome = "granted" if decision.allowed else "denied"
        self.environment.events.request.fire(  # type: ignore[no-untyped-call]
            request_type=REQUEST_TYPE,
            name=f"{self.scenario}: acquire {outcome}",
            response_time=elapsed * 1000,
            response_length=decision.granted if decision else 0,
            exception=exception,
            context={},
        )
        return decision


class _LimiterUser(FastHttpUser):
    """Takes a permit, then dials the stub with it; ``host`` is the stub."""

    abstract = True
    scenario: ClassVar[str]
    host = SETTINGS.worker_url
    fixed_count = SETTINGS.users
    wait_time = constant_throughput(SETTINGS.demand * SETTINGS.limit / SETTINGS.users)
    _sequence = itertools.count()

    def on_start(self) -> None:
        self.limiter = LimiterClient(shared_limiter(self.scenario), self.environment, self.scenario)
        self.campaign = SETTINGS.campaign(self.scenario)

    @task
    def dial(self) -> None:
        if traffic_over():
            return
        decision = self.limiter.acquire(max_wait=SETTINGS.max_wait)
        if decision is None or not decision.granted:
            return
        number = next(self._sequence)
        contact = f"contact-{os.getpid()}-{number}"
        self.client.post(
            "/dial",
            json={
                "callId": f"call-{self.campaign}-{contact}-{time.time_ns() // 1_000_000}",
                "phoneNumber": f"+9725{number % 10**8:08d}",
                "campaignId": self.campaign,
                "contactId": contact,
                "audioFileUrl": "https://s3.amazonaws.com/bucket/audio.mp3",
                "ivrFlow": {"nodes": [], "startNodeId": None},
                "metadata": {"sentAt": time.time()},
            },
            name=f"{self.scenario}: dial",
        )


class FixedWindowUser(_LimiterUser):
    scenario = "fixed"


class SlidingWindowUser(_LimiterUser):
    scenario = "sliding"


class TokenBucketUser(_LimiterUser):
    scenario = "token"


_dialer: Dialer | None = None


def shared_dialer() -> Dialer:
    """One dialer per process, shared by its users, as one Lambda container's."""
    global _dialer
    with _limiters_lock:
        if _dialer is None:
            env = {**os.environ, **SETTINGS.dialer_env()}
            _dialer = Dialer.from_settings(DialerSettings.from_env(env))
        return _dialer


class DialerUser(User):
    """Runs batches of 10 through the process's dialer, as the pipe would deliver them."""

    fixed_count = SETTINGS.dialer_users
    wait_time = constant_throughput(
        SETTINGS.demand * SETTINGS.limit / BATCH / max(SETTINGS.dialer_users, 1)
    )

    def on_start(self) -> None:
        self.dialer = shared_dialer()
        self.factory = TaskFactory(campaign_id=SETTINGS.campaign("dialer"))

    @task
    def batch(self) -> None:
        if traffic_over():
            return
        with self.environment.events.request.measure(
            "lambda", f"dialer: handler, batch of {BATCH}"
        ) as meta:
            result = self.dialer.process(self.factory.batch(BATCH))
            meta["response_length"] = result["successful"]


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _close_limiters(environment: Environment, **kwargs: Any) -> None:
    for limiter in _limiters.values():
        limiter.close()
    if _dialer is not None:
        _dialer.close()
