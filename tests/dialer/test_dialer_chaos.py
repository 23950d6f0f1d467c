"""Faults injected at every boundary of a batch (tests/support/chaos.py), each schedule run
until the pipe has nothing left to redeliver: no task is placed twice, every task is placed
once, nothing held outlives its bound, and no counter goes over the limit.

``CHAOS_SCHEDULES`` sets how many schedules run (``make chaos`` runs thousands); a failure names
its seed, and ``CHAOS_SEED=<seed>`` runs that schedule alone.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.chaos import BOUNDARIES, Schedule
from tests.support.chaos_run import Verdict, run_schedule

SCHEDULES = int(os.environ.get("CHAOS_SCHEDULES", "120"))
PARALLEL = 24


def _seeds() -> list[int]:
    only = os.environ.get("CHAOS_SEED")
    return [int(only)] if only else list(range(SCHEDULES))


@pytest.fixture(scope="module")
def honouring_stub() -> Iterator[WorkerStub]:
    with WorkerStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def seed_worker() -> Iterator[WorkerStub]:
    """The seed's worker: it knows no idempotency key."""
    with WorkerStub(honour_keys=False) as stub:
        yield stub


def _run_all(redis_server: RedisServer, stub: WorkerStub) -> list[Verdict]:
    schedules = [Schedule.of(seed) for seed in _seeds()]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(lambda s: run_schedule(s, redis_server.port, stub), schedules))


def _summary(verdicts: list[Verdict], worker: str, capsys: pytest.CaptureFixture[str]) -> None:
    faults = Counter(v.schedule.fault for v in verdicts)
    deliveries = Counter(v.deliveries for v in verdicts)
    twice = Counter(v.schedule.boundary for v in verdicts if v.twice)
    kept, met = sum(not v.problems for v in verdicts), sum(v.fired for v in verdicts)
    with capsys.disabled():
        print(
            f"\n{worker}: {len(verdicts)} schedules ({met} met their fault), {kept} kept every "
            f"promise; faults {dict(sorted(faults.items()))}; deliveries until nothing was "
            f"left {dict(sorted(deliveries.items()))}; tasks placed "
            f"{sum(v.placed.total() for v in verdicts)}; schedules with a task placed twice "
            f"{sum(twice.values())}, by where the container died: {dict(sorted(twice.items()))}"
        )


def _report(verdicts: list[Verdict]) -> str:
    broken = [v for v in verdicts if v.problems]
    lines = [f"{len(broken)} of {len(verdicts)} schedules broke a promise"]
    lines += [f"{v.schedule}: {'; '.join(v.problems)}" for v in broken[:20]]
    return "\n".join(lines)


def test_every_fault_at_every_boundary_places_each_task_once(
    redis_server: RedisServer, honouring_stub: WorkerStub, capsys: pytest.CaptureFixture[str]
) -> None:
    verdicts = _run_all(redis_server, honouring_stub)
    _summary(verdicts, "a worker honouring the key", capsys)

    assert not any(v.problems for v in verdicts), _report(verdicts)
    covered = {(v.schedule.boundary, v.schedule.fault) for v in verdicts}
    every = {(b, f) for b, faults in BOUNDARIES.items() for f in faults}
    if "CHAOS_SEED" not in os.environ:
        assert covered == every, f"not covered: {sorted(every - covered)}"


def test_with_the_seeds_worker_a_task_is_placed_twice_only_when_its_container_died_unrecorded(
    redis_server: RedisServer, seed_worker: WorkerStub, capsys: pytest.CaptureFixture[str]
) -> None:
    verdicts = _run_all(redis_server, seed_worker)
    _summary(verdicts, "the seed's worker", capsys)

    assert not any(v.problems for v in verdicts), _report(verdicts)
