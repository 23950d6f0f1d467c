"""Campaign limits: maxConcurrentCalls as leases taken with the trunk's permit in one decision,
maxCps as a second CPS rule, and campaigns sharing the trunk."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cps_limiter import ConfigurationError
from dialer_lambda import Dialer, Settings
from dialer_lambda._campaigns import CAMPAIGN_CPS_ERROR, CAMPAIGN_FULL_ERROR
from loadtest.servers import free_port
from loadtest.worker_stub import CallEnds, WorkerStub
from tests.support.dialer import FakeContext, Lines, MakeDialer, make_task

FULL = 5
SHARING_SECONDS = 3.0
SHORT_CALL_MAX = "0.5"
"""CALL_MAX_SECONDS for tests that wait for leases to expire: short, on the Redis clock."""


@pytest.fixture(autouse=True)
def worker_frees_leases(make_dialer: MakeDialer) -> None:
    """The operator's word that the worker frees each lease: without it no lease is taken."""
    make_dialer.defaults["WORKER_FREES_LEASES"] = "true"


def limited_task(index: int, campaign: str = "campaign-5", **config: Any) -> dict[str, Any]:
    task = make_task(index, campaignId=campaign)
    task["campaign"]["id"] = campaign
    task["campaign"]["config"].update(config)
    return task


def full_batch(start: int, size: int = 10, campaign: str = "campaign-5") -> list[dict[str, Any]]:
    return [limited_task(n, campaign, maxConcurrentCalls=FULL) for n in range(start, start + size)]


def wait_for_expiry(dialer: Dialer, scope: str) -> None:
    """Return once no lease of ``scope`` is live on the Redis clock."""
    while dialer.limiter.leases_held(scope)[0]:
        pass


def test_a_full_campaign_gets_exactly_its_limit_until_the_leases_expire_then_as_many_more(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(CALL_MAX_SECONDS=SHORT_CALL_MAX, RATE_LIMIT_MAX_WAIT_SECONDS="0.2")
    first = dialer.process(full_batch(0), FakeContext())
    again = dialer.process(full_batch(10), FakeContext())
    assert (first["successful"], first["rateLimited"]) == (FULL, 10 - FULL)
    assert (again["successful"], again["rateLimited"]) == (0, 10)
    assert len(stub.calls) == FULL
    wait_for_expiry(dialer, "campaign:campaign-5")
    later = dialer.process(full_batch(20), FakeContext())
    assert later["successful"] == FULL
    assert len(stub.calls) == 2 * FULL


def test_leases_that_expire_unfreed_are_counted_and_said_to_be_the_workers(
    make_dialer: MakeDialer, lines: Lines
) -> None:
    dialer = make_dialer(CALL_MAX_SECONDS=SHORT_CALL_MAX, RATE_LIMIT_MAX_WAIT_SECONDS="0.2")
    dialer.process(full_batch(0, size=FULL), FakeContext())
    wait_for_expiry(dialer, "campaign:campaign-5")

    dialer.process(full_batch(10, size=FULL), FakeContext())

    first, second = lines.emf()
    [warning] = lines.events("leases_expired")
    assert (first["LeasesExpired"], second["LeasesExpired"]) == (0, FULL)
    assert (warning["campaignId"], warning["leases"]) == ("campaign-5", FULL)


def rate_limit_reasons(lines: Lines) -> set[str]:
    return {line["message"] for line in lines.events("rate_limited")}


def test_a_task_whose_campaign_is_full_is_rate_limited_and_retried(
    make_dialer: MakeDialer, lines: Lines
) -> None:
    dialer = make_dialer()
    result = dialer.process(full_batch(0, size=7), FakeContext())
    assert result["rateLimited"] == 2
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-5"}, {"itemIdentifier": "m-6"}]
    assert rate_limit_reasons(lines) == {f"rate limited, back to the queue: {CAMPAIGN_FULL_ERROR}"}


def test_each_lease_is_named_by_the_call_id_the_worker_received(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    dialer.process(full_batch(0, size=3), FakeContext())
    key = dialer.limiter.lease_key("campaign:campaign-5")
    members = {m.decode() for m in dialer.limiter.client.zrange(key, 0, -1)}
    assert members == {call.call_id for call in stub.calls}
    assert key == "cps:campaign:campaign-5:leases"


def test_the_worker_frees_a_slot_with_one_zrem_of_the_call_id(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    dialer.process(full_batch(0, size=FULL), FakeContext())
    ended = stub.calls[0].call_id
    client = dialer.limiter.client
    assert client.execute_command("ZREM", "cps:campaign:campaign-5:leases", ended) == 1
    result = dialer.process(full_batch(10, size=2), FakeContext())
    assert (result["successful"], result["rateLimited"]) == (1, 1)


def test_a_lease_whose_dial_never_reached_the_worker_is_released(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    stub.set_behaviour(http_503=1.0)
    dialer = make_dialer()
    result = dialer.process(full_batch(0, size=3), FakeContext())
    assert result["rateLimited"] == 3
    assert dialer.limiter.leases_held("campaign:campaign-5")[0] == 0


def test_a_campaign_without_limits_takes_no_lease(make_dialer: MakeDialer) -> None:
    dialer = make_dialer()
    tasks = [make_task(n) for n in range(3)]
    for task in tasks:
        del task["campaign"]["config"]["maxConcurrentCalls"]
    result = dialer.process(tasks, FakeContext())
    assert result["successful"] == 3
    assert not list(dialer.limiter.client.scan_iter(match="cps:campaign:*"))


def test_a_full_campaign_does_not_hold_back_another_in_the_same_batch(
    make_dialer: MakeDialer,
) -> None:
    dialer = make_dialer()
    batch = full_batch(0, size=8) + [
        limited_task(n, "campaign-free", maxConcurrentCalls=50) for n in range(8, 16)
    ]
    result = dialer.process(batch, FakeContext())
    assert (result["successful"], result["rateLimited"]) == (FULL + 8, 8 - FULL)


def test_max_cps_is_a_second_cps_rule_in_the_same_decision(
    make_dialer: MakeDialer, stub: WorkerStub, lines: Lines
) -> None:
    # A trunk that never holds anything back: what is held back is the campaign's doing.
    dialer = make_dialer(MAX_CPS="1000", RATE_LIMIT_MAX_WAIT_SECONDS="0.5")
    batch = [limited_task(n, maxCps=3) for n in range(10)]
    result = dialer.process(batch, FakeContext())
    per_second = Counter(int(call.at) for call in stub.calls)
    assert max(per_second.values()) <= 3
    assert result["successful"] == len(stub.calls) >= 3
    assert rate_limit_reasons(lines) == {f"rate limited, back to the queue: {CAMPAIGN_CPS_ERROR}"}


def test_two_campaigns_with_the_same_demand_share_the_trunk(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS="10", RATE_LIMIT_MAX_WAIT_SECONDS="0.5")
    for batch in range(4):
        tasks = [
            limited_task(batch * 100 + n, campaign, maxConcurrentCalls=1000)
            for n in range(10)
            for campaign in ("campaign-a", "campaign-b")
        ]
        dialer.process(tasks, FakeContext())
    split = Counter(call.body["campaignId"] for call in stub.calls)
    total = sum(split.values())
    assert total >= 8
    assert abs(split["campaign-a"] - split["campaign-b"]) <= 2


def test_call_max_seconds_defaults_to_an_hour_and_refuses_zero() -> None:
    assert Settings.from_env({}).call_max_seconds == 3600.0
    with pytest.raises(ConfigurationError, match="CALL_MAX_SECONDS"):
        Settings.from_env({"CALL_MAX_SECONDS": "0"})


@pytest.mark.parametrize("value", [0, -1, True, "5", 2.5])
def test_a_malformed_max_concurrent_calls_makes_the_task_invalid(
    make_dialer: MakeDialer, value: object
) -> None:
    result = make_dialer().process([limited_task(0, maxConcurrentCalls=value)], FakeContext())
    assert result["failed"] == 1
    assert result["errors"][0]["error"].startswith("invalid task: campaign.config.maxConcurrent")


def test_the_stub_ends_each_call_after_call_seconds_and_frees_its_lease(memory_url: str) -> None:
    with WorkerStub() as stub:
        factory = MakeDialer(stub.url, memory_url)
        dialer = factory(WORKER_FREES_LEASES="true")
        stub.call_ends = ends = CallEnds(dialer.limiter.client, call_seconds=0.1)
        first = dialer.process(full_batch(0, size=FULL + 2), FakeContext())
        ends.wait_idle()
        released = ends.released
        second = dialer.process(full_batch(10, size=FULL), FakeContext())
        factory.close()
    assert (first["successful"], first["rateLimited"]) == (FULL, 2)
    assert second["successful"] == FULL
    assert released == FULL


def test_two_campaigns_in_batches_of_their_own_share_the_trunk(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    """Two invocations per campaign, each taking batches of its campaign for the same time:
    the same demand, as a queue that keeps delivering both campaigns' tasks would make."""
    dialer = make_dialer(MAX_CPS="20", RATE_LIMIT_MAX_WAIT_SECONDS="0.5")
    ends = time.monotonic() + SHARING_SECONDS

    def invocation(campaign: str, first: int) -> None:
        for start in itertools.count(first, 10):
            if time.monotonic() >= ends:
                return
            tasks = [
                limited_task(n, campaign, maxConcurrentCalls=1000) for n in range(start, start + 10)
            ]
            dialer.process(tasks, FakeContext())

    with ThreadPoolExecutor(4) as pool:
        runs = [
            pool.submit(invocation, campaign, 100_000 * k)
            for k, campaign in enumerate(["campaign-a", "campaign-b", "campaign-a", "campaign-b"])
        ]
        for run in runs:
            run.result()
    split = Counter(call.body["campaignId"] for call in stub.calls if call.body is not None)
    total = split["campaign-a"] + split["campaign-b"]
    assert total >= SHARING_SECONDS * 20 * 0.6
    assert min(split["campaign-a"], split["campaign-b"]) >= 0.1 * total


@pytest.mark.parametrize("strategy", ["fixed", "token", "sliding"])
def test_with_any_trunk_strategy_the_campaign_gets_exactly_its_limit(
    make_dialer: MakeDialer, strategy: str
) -> None:
    dialer = make_dialer(CPS_STRATEGY=strategy, MAX_CPS="50")
    result = dialer.process(full_batch(0, size=8), FakeContext())
    assert (result["successful"], result["rateLimited"]) == (FULL, 8 - FULL)
    assert dialer.limiter.leases_held("campaign:campaign-5")[0] == FULL


def test_while_redis_is_down_a_limited_campaign_is_dialed_without_its_limit(
    stub: WorkerStub,
) -> None:
    factory = MakeDialer(stub.url, f"redis://127.0.0.1:{free_port()}/0")
    try:
        result = factory().process(full_batch(0, size=3), FakeContext())
    finally:
        factory.close()
    assert result["successful"] == 3
    assert len(stub.calls) == 3
