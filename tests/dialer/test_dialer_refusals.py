"""The worker's 429 and 503 replies are refusals: the dialer adds them to the limit's pending
refusals at the batch's end, which the adaptive limit's AIMD reads."""

from __future__ import annotations

import pytest

from dialer_lambda import Dialer, Settings
from loadtest.servers import RedisServer
from loadtest.worker_stub import Behaviour, WorkerStub
from tests.support.chaos import FaultyTransport, Injector, Schedule, faulty_connection
from tests.support.dialer import FakeContext, MakeDialer, make_task

BATCH = 3


@pytest.mark.parametrize("behaviour", [Behaviour(http_429=1.0), Behaviour(http_503=1.0)])
def test_the_workers_busy_replies_are_reported_as_refusals(
    make_dialer: MakeDialer, stub: WorkerStub, behaviour: Behaviour
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(behaviour=behaviour)
    dialer.process([make_task(n) for n in range(BATCH)], FakeContext())
    assert dialer.limiter.aimd().refused == BATCH


def test_reported_refusals_lower_the_limit_in_force(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS="100")
    stub.set_behaviour(behaviour=Behaviour(http_503=1.0))
    dialer.process([make_task(0)], FakeContext())
    assert dialer.limiter.peek().limit == 85


@pytest.mark.parametrize("behaviour", [Behaviour(), Behaviour(fail=1.0), Behaviour(http_500=1.0)])
def test_other_replies_report_no_refusal(
    make_dialer: MakeDialer, stub: WorkerStub, behaviour: Behaviour
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(behaviour=behaviour)
    dialer.process([make_task(n) for n in range(BATCH)], FakeContext())
    assert dialer.limiter.aimd().refused == 0
    assert dialer.limiter.peek().limit == dialer.settings.max_cps


@pytest.mark.redis
def test_refusals_are_reported_when_the_claims_failed_open(
    redis_server: RedisServer, stub: WorkerStub, prefix: str
) -> None:
    injector = Injector(Schedule(0, "claims.send", "raise", 1, limited=False))
    settings = Settings(
        redis_url=redis_server.url,
        node_worker_url=stub.url,
        cps_key_prefix=f"{prefix}:cps",
        idempotency_key_prefix=f"{prefix}:claim",
    )
    dialer = Dialer.from_settings(
        settings,
        redis_options={"connection_class": faulty_connection(injector, f"{prefix}:claim")},
        worker_transport=FaultyTransport(injector, 1.0),
    )
    stub.set_behaviour(behaviour=Behaviour(http_503=1.0))
    try:
        dialer.process([make_task(n) for n in range(BATCH)], FakeContext())
        assert injector.fired
        assert dialer.limiter.aimd().refused == BATCH
    finally:
        dialer.close()
