"""A dialer end to end (real HTTP to the worker stub, the in-process Redis, threads), and the
Lambda entry point built at import."""

from __future__ import annotations

import importlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import pytest

from cps_limiter import RateLimitExceeded
from dialer_lambda import Dialer
from loadtest.worker_stub import Behaviour, WorkerStub
from tests.support.dialer import (
    DIAL_KEYS,
    SEED_TASK,
    FakeContext,
    Lines,
    MakeDialer,
    RecordingWorker,
    make_batch,
    make_task,
    phone_of,
)

CALL_ID = re.compile(r"call-campaign-123-contact-456-(\d{13})")
BATCH = 10
WORKER_DELAY_MS = 100


def test_the_seeds_example_task_is_posted_with_exactly_the_seeds_keys(
    dialer: Dialer, stub: WorkerStub
) -> None:
    before_ms = time.time_ns() // 1_000_000

    dialer.process([SEED_TASK], FakeContext())

    [call] = stub.calls
    assert call.body is not None
    assert set(call.body) == DIAL_KEYS
    config = SEED_TASK["campaign"]["config"]
    assert call.body == {
        "callId": call.body["callId"],
        "phoneNumber": "+972501234567",
        "campaignId": "campaign-123",
        "contactId": "contact-456",
        "audioFileUrl": config["audioFileUrl"],
        "ivrFlow": config["ivrFlow"],
        "metadata": {"firstName": "John", "lastName": "Doe"},
    }
    match = CALL_ID.fullmatch(str(call.body["callId"]))
    assert match is not None
    assert before_ms <= int(match.group(1)) <= time.time_ns() // 1_000_000


def test_the_seeds_example_task_gives_the_contracts_result(dialer: Dialer) -> None:
    result = dialer.process([SEED_TASK], FakeContext())

    assert result == {
        "totalProcessed": 1,
        "successful": 1,
        "failed": 0,
        "rateLimited": 0,
        "duplicates": 0,
        "errors": [],
        "batchItemFailures": [],
    }


def test_a_mixed_batch_counts_every_task_once_as_the_contract_shows(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(
        MAX_CPS="8",
        RATE_LIMIT_MAX_WAIT_SECONDS="0",
        CPS_STRATEGY="sliding",
        DIAL_TIMEOUT_SECONDS="0.3",
    )
    stub.set_behaviour(phone_of(3), timeout=1.0)
    dialer.process([make_task(9)], FakeContext())  # dialed already, and one permit used

    result = dialer.process(make_batch(BATCH), FakeContext())

    assert result == {
        "totalProcessed": 10,
        "successful": 6,
        "failed": 1,
        "rateLimited": 2,
        "duplicates": 1,
        "errors": [
            {
                "contactId": "contact-3",
                "phoneNumber": phone_of(3),
                "error": "Node.js Worker timeout",
            }
        ],
        "batchItemFailures": [{"itemIdentifier": "m-7"}, {"itemIdentifier": "m-8"}],
    }


def test_one_task_timing_out_fails_alone_and_the_other_nine_are_dialed_meanwhile(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(DIAL_TIMEOUT_SECONDS="0.5")
    stub.set_behaviour(phone_of(3), timeout=1.0)
    started = time.monotonic()

    result = dialer.process(make_batch(BATCH), FakeContext())

    elapsed = time.monotonic() - started
    assert result["successful"] == 9
    assert result["failed"] == 1
    assert result["errors"] == [
        {"contactId": "contact-3", "phoneNumber": phone_of(3), "error": "Node.js Worker timeout"}
    ]
    assert result["batchItemFailures"] == []  # the call may have been placed: never retried
    assert len(stub.calls) == BATCH
    assert elapsed < 0.5 + 0.5  # the timeout plus slack, far inside the Lambda's 15 s


@pytest.mark.parametrize(
    ("behaviour", "status", "error", "retried"),
    [
        (Behaviour(), "successful", None, False),
        (
            Behaviour(fail=1.0),
            "failed",
            "Node.js Worker reported failure: Asterisk originate failed",
            False,
        ),
        (Behaviour(timeout=1.0), "failed", "Node.js Worker timeout", False),
        (Behaviour(http_429=1.0), "rateLimited", None, True),
        (Behaviour(http_503=1.0), "rateLimited", None, True),
        (Behaviour(http_500=1.0), "failed", "Node.js Worker HTTP 500", False),
        (Behaviour(garbage=1.0), "failed", "Node.js Worker reply is not JSON", False),
        (Behaviour(huge=1.0), "failed", "Node.js Worker reply larger than 65536 bytes", False),
        (Behaviour(close=1.0), "failed", "Node.js Worker connection error: ", False),
    ],
    ids=["ok", "fail", "timeout", "429", "503", "500", "garbage", "huge", "close"],
)
def test_each_worker_answer_is_classified_as_the_contract_says(
    make_dialer: MakeDialer,
    stub: WorkerStub,
    behaviour: Behaviour,
    status: str,
    error: str | None,
    retried: bool,
) -> None:
    dialer = make_dialer(DIAL_TIMEOUT_SECONDS="0.3")
    stub.set_behaviour(behaviour=behaviour)

    result = dialer.process([make_task(1)], FakeContext())

    assert dict(result)[status] == 1
    errors = [e["error"] for e in result["errors"]]
    assert [e[: len(error or "")] for e in errors] == ([] if error is None else [error])
    assert result["batchItemFailures"] == ([{"itemIdentifier": "m-1"}] if retried else [])


def test_a_worker_that_refuses_connections_fails_the_task_and_retries_it(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(NODE_WORKER_URL=f"http://127.0.0.1:{_closed_port(stub)}")

    result = dialer.process([make_task(1)], FakeContext())

    assert result["failed"] == 1
    assert result["errors"][0]["error"].startswith("Node.js Worker unreachable")
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-1"}]


def _closed_port(stub: WorkerStub) -> int:
    """A port where nothing listens: the stub's, once it is stopped."""
    port = stub.port
    stub.stop()
    return port


def test_a_retry_after_the_worker_refused_the_connection_dials_the_task(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    refused = make_dialer(NODE_WORKER_URL=f"http://127.0.0.1:{_free_port()}")
    refused.process([make_task(1)], FakeContext())
    dialer = make_dialer()  # the same Redis, the live worker

    result = dialer.process([make_task(1)], FakeContext())

    assert result["successful"] == 1
    assert len(stub.calls) == 1


def _free_port() -> int:
    from loadtest.servers import free_port

    return free_port()


def test_a_retry_after_the_worker_answered_503_dials_the_task(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer()
    stub.set_behaviour(http_503=1.0)
    dialer.process([make_task(1)], FakeContext())
    stub.set_behaviour()

    result = dialer.process([make_task(1)], FakeContext())

    assert result["successful"] == 1
    assert [call.outcome.value for call in stub.calls] == ["http_503", "ok"]


def test_a_timed_out_dial_is_not_dialed_again_on_redelivery(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(DIAL_TIMEOUT_SECONDS="0.2")
    stub.set_behaviour(timeout=1.0)
    dialer.process([make_task(1)], FakeContext())
    stub.set_behaviour()

    result = dialer.process([make_task(1)], FakeContext())

    assert result["duplicates"] == 1
    assert len(stub.calls) == 1


def test_a_batch_of_ten_against_a_100ms_worker_takes_about_one_dial(
    dialer: Dialer, stub: WorkerStub
) -> None:
    stub.set_behaviour(delay_ms=WORKER_DELAY_MS)
    started = time.monotonic()

    result = dialer.process(make_batch(BATCH), FakeContext())

    elapsed = time.monotonic() - started
    assert result["successful"] == BATCH
    assert elapsed < 5 * WORKER_DELAY_MS / 1000  # one dial's time plus overhead, not ten


def test_concurrent_invocations_in_one_process_each_get_their_own_result(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS="1000")
    batches = [make_batch(BATCH, campaignId=f"c-{n}") for n in range(8)]
    for batch in batches:
        for task in batch:
            task["campaign"]["id"] = task["campaignId"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda b: dialer.process(b, FakeContext()), batches))

    assert [r["successful"] for r in results] == [BATCH] * 8
    assert len(stub.calls) == 8 * BATCH


def test_a_dialer_accepts_no_context_for_local_runs(dialer: Dialer) -> None:
    assert dialer.process([make_task(1)], None)["successful"] == 1


def test_the_wait_for_permits_never_runs_past_the_lambdas_remaining_time(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS="1", RATE_LIMIT_MAX_WAIT_SECONDS="10", DIAL_TIMEOUT_SECONDS="1")
    # 2.5 s left, less the dial timeout and the margin: 0.5 s to wait, not 10.
    context = FakeContext(remaining_ms=2_500)
    started = time.monotonic()

    result = dialer.process(make_batch(5), context)

    assert time.monotonic() - started < 1.0
    assert result["successful"] + result["rateLimited"] == 5
    assert result["rateLimited"] >= 3


def test_the_batch_start_and_end_are_logged_with_the_counts(dialer: Dialer, lines: Lines) -> None:
    dialer.process(make_batch(3), FakeContext(aws_request_id="req-42"))

    [start] = lines.events("batch_start")
    [end] = lines.events("batch_end")
    assert start["batchSize"] == 3
    assert end["requestId"] == "req-42"
    assert (end["totalProcessed"], end["successful"]) == (3, 3)


def test_a_request_id_that_looks_like_a_phone_number_is_logged_as_it_is(
    dialer: Dialer, lines: Lines
) -> None:
    # A UUID whose first groups are all digits: 12 digits and a hyphen, phone-shaped.
    request_id = "54512345-1273-48fe-9377-efeb269b34e3"

    dialer.process(make_batch(1), FakeContext(aws_request_id=request_id))

    [start] = lines.events("batch_start")
    [end] = lines.events("batch_end")
    assert (start["requestId"], end["requestId"]) == (request_id, request_id)


def test_each_dial_success_is_logged_with_its_call_id(dialer: Dialer, lines: Lines) -> None:
    dialer.process(make_batch(3), FakeContext())

    logged = lines.events("dial_success")
    assert sorted(line["contactId"] for line in logged) == ["contact-0", "contact-1", "contact-2"]
    assert all(line["callId"].startswith("call-campaign-123-contact-") for line in logged)


def test_no_full_phone_number_appears_in_any_log_line(
    make_dialer: MakeDialer, stub: WorkerStub, lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    dialer = make_dialer(
        DIAL_TIMEOUT_SECONDS="0.2",
        MAX_CPS="6",
        RATE_LIMIT_MAX_WAIT_SECONDS="0",
        CPS_STRATEGY="fixed",
    )
    faults = [
        Behaviour(fail=1.0),
        Behaviour(timeout=1.0),
        Behaviour(http_503=1.0),
        Behaviour(http_500=1.0),
        Behaviour(garbage=1.0),
    ]
    for index, fault in enumerate(faults):
        stub.set_behaviour(phone_of(index), fault)
    batch = make_batch(BATCH)
    batch[5]["attempts"] = "zero"  # invalid: logged with its phone number masked
    batch[6]["phoneNumber"] = "0501234567"  # not E.164, still a phone number
    batch[7]["metadata"] = {"note": f"call back on {phone_of(7)}"}

    dialer.process(batch, FakeContext())
    dialer.process(batch, FakeContext())  # duplicates and rate limits log too

    lines.read()
    text = lines.text + caplog.text
    assert "dial_success" in text
    for task in batch:
        digits = str(task["phoneNumber"]).lstrip("+")
        assert digits not in text
    assert "+97*******0" in text


def test_the_limit_holds_across_invocations(make_dialer: MakeDialer) -> None:
    dialer = make_dialer(MAX_CPS="5", RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding")

    first = dialer.process(make_batch(4), FakeContext())
    second = dialer.process(make_batch(4, attempts=1), FakeContext())

    assert first["successful"] + second["successful"] == 5


def test_invocations_racing_a_barrier_all_finish(make_dialer: MakeDialer) -> None:
    dialer = make_dialer()
    barrier = threading.Barrier(4)

    def invoke(n: int) -> int:
        barrier.wait()
        return dialer.process(make_batch(5, attempts=n), FakeContext())["successful"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(invoke, range(4))) == [5, 5, 5, 5]


def test_a_retried_task_without_message_id_makes_the_whole_batch_come_back(
    make_dialer: MakeDialer, stub: WorkerStub
) -> None:
    dialer = make_dialer(MAX_CPS="2", RATE_LIMIT_MAX_WAIT_SECONDS="0", CPS_STRATEGY="sliding")
    batch = make_batch(3)
    del batch[2]["messageId"]

    with pytest.raises(RateLimitExceeded) as raised:
        dialer.process(batch, FakeContext())

    assert "messageId" in str(raised.value)
    assert raised.value.decision.allowed is False
    assert len(stub.calls) == 2  # the granted dials went out before the raise


# -- the Lambda entry point ------------------------------------------------------------------


@pytest.fixture
def entry_point(
    monkeypatch: pytest.MonkeyPatch, recording_worker: RecordingWorker, memory_url: str
) -> Iterator[ModuleType]:
    """``dialer_lambda.handler`` imported afresh with the test's environment, as the Lambda's
    init phase imports it."""
    monkeypatch.setenv("REDIS_URL", memory_url)
    monkeypatch.setenv("NODE_WORKER_URL", recording_worker.url)
    monkeypatch.delitem(sys.modules, "dialer_lambda.handler", raising=False)
    module = importlib.import_module("dialer_lambda.handler")
    yield module
    module.DIALER.close()


def test_the_entry_point_builds_its_dialer_from_the_environment_at_import(
    entry_point: ModuleType, recording_worker: RecordingWorker, memory_url: str
) -> None:
    settings = entry_point.DIALER.settings

    assert (settings.redis_url, settings.node_worker_url) == (memory_url, recording_worker.url)


def test_warm_invocations_of_the_entry_point_reuse_the_clients_built_at_import(
    entry_point: ModuleType, recording_worker: RecordingWorker
) -> None:
    built = entry_point.DIALER

    first = entry_point.handler([make_task(1)], FakeContext())
    second = entry_point.handler([make_task(2)], None)

    assert (first["successful"], second["successful"]) == (1, 1)
    assert entry_point.DIALER is built
    assert len(recording_worker.ports) == 2
    assert len(set(recording_worker.ports)) == 1  # one kept-alive connection for both
