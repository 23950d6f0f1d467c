"""A fleet through a Redis outage, the short version of ``python -m loadtest.fleet``: six
container processes, each a dialer invoked on batches of 10, tasks arriving at twice MAX_CPS,
one worker stub in its own process stamping every arrival; Redis stopped (SIGSTOP) or killed
and started again empty, for 3 s. Measured at the worker with strict sweeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis

from cps_limiter import PacedWindow
from loadtest.fleet import (
    FAULTS,
    FLOOR,
    OUTAGE_BOUND,
    UNUSED_BOUND,
    Figures,
    FleetConfig,
    run_outage,
)
from loadtest.servers import RedisServer
from tests.conftest import SyncFacade

pytestmark = pytest.mark.slow

CONTAINERS = 6
MAX_CPS = 60
"""Ten a second per container: what the two-core machine dials alongside the rest of the suite
without its own scheduling showing up as bursts at the stub."""


@pytest.fixture(scope="module", params=FAULTS)
def outage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    """One run per fault, shared by the tests that read its figures."""
    fault: str = request.param
    out: Path = tmp_path_factory.mktemp(f"fleet-{fault}")
    config = FleetConfig(
        fault=fault,
        containers=CONTAINERS,
        max_cps=MAX_CPS,
        warm_up=3.0,
        outage=3.0,
        after=4.0,
        out=out,
    )
    figures = Figures.of(run_outage(config))
    print(figures.render())
    return figures


def test_before_the_fault_no_second_holds_more_than_the_limit(outage: Figures) -> None:
    assert outage.before <= MAX_CPS


def test_while_redis_is_away_no_second_holds_more_than_a_quarter_over_the_limit(
    outage: Figures,
) -> None:
    assert outage.during <= OUTAGE_BOUND * MAX_CPS


def test_while_redis_is_away_calls_go_on_at_a_quarter_of_the_limit_or_more(
    outage: Figures,
) -> None:
    assert outage.outage_rate >= FLOOR * MAX_CPS


def test_from_two_seconds_after_redis_returns_no_second_holds_more_than_the_limit(
    outage: Figures,
) -> None:
    assert outage.after <= MAX_CPS
    assert outage.highest_counter is not None
    assert outage.highest_counter <= MAX_CPS


def test_after_redis_returns_no_counter_holds_permits_the_worker_never_got(
    outage: Figures,
) -> None:
    # After a SIGSTOP, requests queued on the stalled connections must not take capacity
    # when Redis resumes: each second's counter is at most the calls of that second.
    assert outage.unused <= UNUSED_BOUND, outage.around


def test_nobody_is_called_twice(outage: Figures) -> None:
    assert outage.placed_twice == 0


def test_no_task_is_skipped_as_a_duplicate_of_itself(outage: Figures) -> None:
    # Every task is unique and only tasks that never reached the worker come back: a
    # duplicate would be a claim that outlived its own caller, and the task is never called.
    assert outage.skipped == 0


# -- one limiter through a stall: what its callers gave up on ------------------------------

STALL_SECONDS = 2.0
"""Long enough that the breaker opens and probes Redis (0.5 s after its third failure) in the
last second of the stall, which the caller's deadline (1 s) alone would not refuse."""
PERMITS = 10
PROBE_PACE = 0.05
"""Seconds between the caller's requests while Redis is stalled."""


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def granted_from_now_on(server: RedisServer, prefix: str) -> int:
    """The permits the paced window's counters hold for this second of Redis's clock and the
    next few: what the requests Redis ran since the second began took."""
    with closing(redis.Redis(port=server.port)) as client:
        now = int(client.time()[0])
        keys = [f"{prefix}:{second}" for second in range(now, now + 5)]
        return sum(int(value) for value in client.mget(keys) if value is not None)


def test_requests_whose_callers_gave_up_take_no_capacity_when_a_stalled_redis_resumes(
    make_limiter_on: Callable[..., SyncFacade], own_redis: RedisServer, prefix: str
) -> None:
    limiter = make_limiter_on(own_redis.url, PacedWindow(100), fail_mode="bounded")
    assert limiter.acquire(permits=PERMITS, partial=True, max_wait=1.0).granted == PERMITS
    own_redis.pause()
    stalled = time.monotonic()
    decisions = []
    while time.monotonic() - stalled < STALL_SECONDS:
        # A caller asking all along, as a dialer's batches do: its requests fail, open the
        # breaker, and the breaker's probes meet the stalled server too.
        decisions.append(limiter.acquire(permits=PERMITS, partial=True))
        time.sleep(PROBE_PACE)
    own_redis.resume()

    assert all(decision.fail_open for decision in decisions)
    # Nobody asked since Redis resumed: whatever the counters hold was taken by requests
    # queued on the stalled connections, whose callers had long given up.
    assert granted_from_now_on(own_redis, prefix) == 0
