"""The ledger's promise on the paths nobody planned for: every task ends once, and what a task
that was not sent holds is given back, whatever raises or comes back late."""

from __future__ import annotations

import ast
import logging
import pathlib
from collections import Counter
from typing import Any

import pytest
import redis

from dialer_lambda import Dialer, Settings
from dialer_lambda._ledger import Ledger, State, StateError
from dialer_lambda._outcome import TaskStatus
from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.chaos import FaultyTransport, Injector, Schedule, faulty_connection
from tests.support.dialer import (
    DIAL_KEYS,
    FakeContext,
    Lines,
    MakeDialer,
    make_batch,
    make_task,
    phone_of,
)

BATCH = 10
PACKAGE = pathlib.Path(__file__).parents[2] / "dialer_lambda"


def _leased(task: dict[str, Any], limit: int = 100) -> dict[str, Any]:
    task["campaign"]["config"]["maxConcurrentCalls"] = limit
    return task


def _placed(stub: WorkerStub) -> Counter[tuple[object, object]]:
    return Counter(
        (c.body.get("contactId"), c.body.get("campaignId"))
        for c in stub.calls
        if c.placed and c.body
    )


def test_a_task_state_only_moves_forward() -> None:
    ledger = Ledger.of([{}])
    ledger.claimed(0)

    with pytest.raises(StateError, match="CLAIMED cannot become CLAIMED"):
        ledger.claimed(0)


def test_a_task_ends_once() -> None:
    ledger = Ledger.of([{}])
    ledger.handed_back(0, TaskStatus.RATE_LIMITED, "no permit")

    with pytest.raises(StateError, match="HANDED_BACK cannot become"):
        ledger.handed_back(0, TaskStatus.RATE_LIMITED, "no permit")


def test_closing_ends_open_tasks_and_names_what_they_hold() -> None:
    ledger = Ledger.of([{}, {}, {}])
    for index in range(3):
        ledger.claiming(index, f"claim-{index}")
        ledger.claimed(index)
    ledger.permitted(1, 0.0, leased=False)
    ledger.sending(1)
    ledger.calling(2, "call-2", "campaign:c")

    ended, holdings = ledger.close()

    assert ended == [0, 1, 2]
    assert [r.state for r in ledger.records] == [State.HANDED_BACK, State.SENT, State.HANDED_BACK]
    assert holdings.give_back_claims == ("claim-0", "claim-2")
    assert holdings.mark_sent_claims == ("claim-1",)
    assert holdings.free_leases == (("campaign:c", "call-2"),)


def test_no_module_of_the_dialer_imports_another_in_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            (node.module or "").lstrip(".").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }

    def circle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = circle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    circles = [c for m in graph if (c := circle_from(m, m, (m,)))]
    assert circles == []


def test_two_attempts_of_one_contact_in_a_leased_batch_are_both_dialed(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(WORKER_FREES_LEASES="true")
    batch = [_leased(make_task(0)), _leased(make_task(0, attempts=1, messageId="m-0b"))]

    result = dialer.process(batch, FakeContext())

    assert result["successful"] == 2
    assert len({call.call_id for call in stub.calls}) == 2


def test_ids_that_would_make_a_lease_id_too_long_fail_that_task_alone(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(WORKER_FREES_LEASES="true")
    long_id = "c" * 100
    batch = [_leased(make_task(i)) for i in range(3)]
    batch[1] = _leased(make_task(1, campaignId=long_id, contactId="k" * 100))
    batch[1]["campaign"]["id"] = long_id

    result = dialer.process(batch, FakeContext())

    assert (result["successful"], result["failed"]) == (2, 1)
    assert "campaignId and contactId must hold at most" in result["errors"][0]["error"]
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-1"}]


def test_a_step_that_raises_hands_its_tasks_back_and_logs_the_stack(
    dialer: Dialer, stub: WorkerStub, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in a step")

    with monkeypatch.context() as patch:
        patch.setattr(dialer.limiter, "acquire", broken)
        result = dialer.process(make_batch(BATCH), FakeContext())
    again = dialer.process(make_batch(BATCH), FakeContext())

    assert len(result["batchItemFailures"]) == BATCH
    [error] = lines.events("batch_error")
    assert "RuntimeError: a bug in a step" in error["exception"]
    assert again["successful"] == BATCH
    assert sum(_placed(stub).values()) == BATCH


@pytest.mark.redis
@pytest.mark.parametrize("fail_mode", ["bounded", "closed"])
def test_a_claims_reply_that_comes_late_leaves_what_is_handed_back_free_to_dial(
    redis_server: RedisServer, stub: WorkerStub, prefix: str, fail_mode: str
) -> None:
    injector = Injector(Schedule(0, "claims.reply", "delay", 1, limited=False))
    settings = Settings(
        redis_url=redis_server.url,
        node_worker_url=stub.url,
        fail_mode=fail_mode,  # type: ignore[arg-type]
        dial_timeout=1.0,
        cps_key_prefix=f"{prefix}:cps",
        idempotency_key_prefix=f"{prefix}:claim",
    )
    dialer = Dialer.from_settings(
        settings,
        redis_options={"connection_class": faulty_connection(injector, f"{prefix}:claim")},
        worker_transport=FaultyTransport(injector, 1.0),
    )
    stub.set_behaviour(phone_of(3), http_503=1.0)
    try:
        first = dialer.process(make_batch(BATCH), FakeContext())
        stub.clear_behaviour(phone_of(3))
        redelivered = [m["itemIdentifier"] for m in first["batchItemFailures"]]
        again = dialer.process(
            [t for t in make_batch(BATCH) if t["messageId"] in redelivered], FakeContext()
        )
    finally:
        dialer.close()

    assert injector.fired
    assert again["successful"] == len(redelivered) >= 1
    assert again["duplicates"] == 0
    assert sorted(_placed(stub).values()) == [1] * BATCH


def test_a_dial_is_sent_with_an_idempotency_key_the_same_on_every_delivery(
    dialer: Dialer, recording_worker: Any, make_dialer: MakeDialer
) -> None:
    own = make_dialer(NODE_WORKER_URL=recording_worker.url)
    own.process([make_task(1)], FakeContext())
    other = make_dialer(NODE_WORKER_URL=recording_worker.url, IDEMPOTENCY_KEY_PREFIX="other")
    other.process([make_task(1)], FakeContext())

    keys = recording_worker.headers("idempotency-key")
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert all(set(body) == DIAL_KEYS for _, body in recording_worker.requests)


def test_a_worker_honouring_the_key_places_no_second_call(stub: WorkerStub) -> None:
    import httpx

    for _ in range(2):
        httpx.post(f"{stub.url}/dial", json={"callId": "c"}, headers={"Idempotency-Key": "k"})

    assert [call.placed for call in stub.calls] == [True, False]


@pytest.mark.redis
def test_a_claim_is_pending_until_the_post_has_left_then_sent_for_the_idempotency_ttl(
    redis_server: RedisServer, stub: WorkerStub, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        redis_url=redis_server.url,
        node_worker_url=stub.url,
        idempotency_ttl=3600,
        cps_key_prefix=f"{prefix}:cps",
        idempotency_key_prefix=f"{prefix}:claim",
    )
    dialer = Dialer.from_settings(settings)
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    stub.set_behaviour(phone_of(1), http_503=1.0)
    try:
        with caplog.at_level(logging.INFO):
            dialer.process(make_batch(2), FakeContext(remaining_ms=4000))
        held = {key: client.get(key) for key in client.keys(f"{prefix}:claim:*")}
        [(key, value)] = held.items()
        ttl = client.ttl(key)
    finally:
        dialer.close()
        client.close()

    assert value.startswith("sent:")
    assert 3590 <= ttl <= 3600
