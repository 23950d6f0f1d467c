"""The worker's 429 and 503 replies are refusals: the dialer adds them to the limit's pending
refusals at the batch's end, which the adaptive limit's AIMD reads."""

from __future__ import annotations

from typing import NoReturn

import pytest

from cps_limiter import BackendUnavailable
from dialer_lambda._claims import ClaimStore
from loadtest.worker_stub import Behaviour, WorkerStub
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


def test_refusals_are_reported_when_the_claims_failed(
    make_dialer: MakeDialer, stub: WorkerStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialer = make_dialer()

    def unavailable(*args: object) -> NoReturn:
        raise BackendUnavailable("claims down")

    # The claims' keys are in the ledger from before their round trip: the give-back that
    # carries the refusals still happens.
    monkeypatch.setattr(ClaimStore, "claim", unavailable)
    stub.set_behaviour(behaviour=Behaviour(http_503=1.0))
    result = dialer.process([make_task(n) for n in range(BATCH)], FakeContext())
    assert result["rateLimited"] == BATCH
    assert dialer.limiter.aimd().refused == BATCH
