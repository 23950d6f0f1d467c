"""The handler under the real runtime client: ``python -m awslambdaric`` (what the Lambda Python
base image runs) against an emulated Runtime API, with the suite's redis-server and a worker
stub. Each invocation's end is observed where Lambda sees it, on the Runtime API."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis

from loadtest.runtime.api import DEFAULT_WAIT_SECONDS, RuntimeApi
from loadtest.runtime.process import RuntimeProcess, cold_start_seconds
from loadtest.tasks import seed_task
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import make_batch, make_task, phone_of, seed_result
from tests.support.emf import emf_lines, line_problems

BATCH = 10
RESULT = seed_result(BATCH)


@dataclass(frozen=True)
class Runtime:
    """One execution environment: its Runtime API and the runtime client's process."""

    api: RuntimeApi
    process: RuntimeProcess


@pytest.fixture
def dialer_env(redis_url: str, stub: WorkerStub, prefix: str) -> dict[str, str]:
    """The function's configuration: the suite's Redis (connections named after the test's
    prefix, and keys under it) and the stub."""
    return {
        "REDIS_URL": f"{redis_url}?client_name={prefix}",
        "NODE_WORKER_URL": stub.url,
        "CPS_KEY_PREFIX": f"{prefix}:cps",
        "IDEMPOTENCY_KEY_PREFIX": f"{prefix}:claim",
        "DIAL_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def start_runtime(dialer_env: dict[str, str]) -> Iterator[Callable[..., Runtime]]:
    """Start an execution environment with ``start_runtime(MAX_CPS="5", ...)``; each is
    stopped at the end, and none may have broken the Runtime API's protocol."""
    started: list[Runtime] = []
    with contextlib.ExitStack() as stack:

        def start(**env: str) -> Runtime:
            api = stack.enter_context(RuntimeApi())
            process = stack.enter_context(RuntimeProcess(api, {**dialer_env, **env}))
            started.append(Runtime(api, process))
            return started[-1]

        yield start
    assert [runtime.api.violations for runtime in started] == [[] for _ in started]


@pytest.fixture
def runtime(start_runtime: Callable[..., Runtime]) -> Runtime:
    return start_runtime()


def _named_connections(client: redis.Redis, name: str) -> set[str]:
    entries = cast(list[dict[str, str]], client.client_list())
    return {entry["id"] for entry in entries if entry.get("name") == name}


def test_a_batch_of_ten_is_dialed_and_answered_with_the_seeds_result(
    runtime: Runtime, stub: WorkerStub
) -> None:
    end = runtime.api.run(make_batch(BATCH))

    assert end.outcome == "response"
    assert end.json() == RESULT
    assert sorted(call.phone_number or "" for call in stub.calls) == [
        phone_of(index) for index in range(BATCH)
    ]


def test_a_batch_redelivered_to_another_environment_dials_no_one_again(
    start_runtime: Callable[..., Runtime], stub: WorkerStub
) -> None:
    start_runtime().api.run(make_batch(BATCH))

    redelivered = start_runtime().api.run(make_batch(BATCH))

    assert redelivered.json() == {**RESULT, "successful": 0, "duplicates": BATCH}
    assert len(stub.calls) == BATCH


def test_invalid_tasks_are_reported_by_field_and_handed_back_to_the_queue(
    runtime: Runtime, stub: WorkerStub
) -> None:
    no_campaign_id = make_task(1)
    del no_campaign_id["campaignId"]
    invalid = [make_task(0, phoneNumber="12345"), no_campaign_id, make_task(2, attempts=-1)]
    valid = [make_task(index) for index in range(len(invalid), BATCH)]

    result = runtime.api.run([*invalid, *valid]).json()

    named = [
        (error["contactId"], field in error["error"])
        for error, field in zip(
            result["errors"], ["phoneNumber", "campaignId", "attempts"], strict=True
        )
    ]
    assert named == [("contact-0", True), ("contact-1", True), ("contact-2", True)]
    assert result["batchItemFailures"] == [{"itemIdentifier": f"m-{i}"} for i in range(3)]
    assert (result["failed"], result["successful"]) == (len(invalid), len(valid))
    assert len(stub.calls) == len(valid)


@pytest.mark.parametrize(
    "event",
    [{"Records": []}, make_task(1), "[]", None],
    ids=["sqs-event", "one-task", "string", "null"],
)
def test_an_event_that_is_not_a_list_fails_the_invocation_through_the_error_endpoint(
    runtime: Runtime, stub: WorkerStub, event: Any
) -> None:
    end = runtime.api.run(event)

    assert end.outcome == "error"
    error = end.json()
    assert (error["errorType"], error["requestId"]) == ("ValueError", end.request_id)
    assert error["errorMessage"].startswith("event must be a JSON array of dial tasks")
    assert stub.calls == []


def test_a_batch_answers_before_the_deadline_when_the_worker_is_slower_than_the_time_left(
    start_runtime: Callable[..., Runtime], stub: WorkerStub
) -> None:
    # Production's dial timeout, longer than the invocation has left.
    runtime = start_runtime(DIAL_TIMEOUT_SECONDS="5")
    stub.set_behaviour(delay_ms=4_000)

    end = runtime.api.run(make_batch(BATCH), timeout=2.0)

    assert end.in_time, (
        f"ended {end.ended_ms - end.deadline_ms} ms after the deadline "
        f"({end.ended_ms - end.started_ms} ms for a 2 s invocation)"
    )


def test_thirty_warm_invocations_share_one_redis_connection(
    start_runtime: Callable[..., Runtime], raw_redis: redis.Redis, prefix: str
) -> None:
    runtime = start_runtime(MAX_CPS="1000")
    batches = [[make_task(BATCH * n + i) for i in range(BATCH)] for n in range(30)]
    first = runtime.api.run(batches[0])
    after_first = _named_connections(raw_redis, prefix)

    ends = [first, *(runtime.api.run(batch) for batch in batches[1:])]

    assert [end.json()["successful"] for end in ends] == [BATCH] * 30
    assert len(after_first) == 1
    assert _named_connections(raw_redis, prefix) == after_first


def test_thirty_warm_batches_of_the_seeds_task_dial_300_through_a_worker_freeing_nothing(
    start_runtime: Callable[..., Runtime], stub: WorkerStub
) -> None:
    runtime = start_runtime(MAX_CPS="1000")
    seed = seed_task(limits=True)  # the seed's task as it is, maxConcurrentCalls 100 included
    batches = [
        [{**seed, "contactId": f"seed-{n}-{i}", "messageId": f"seed-{n}-{i}"} for i in range(BATCH)]
        for n in range(30)
    ]

    ends = [runtime.api.run(batch) for batch in batches]

    assert [end.json()["successful"] for end in ends] == [BATCH] * 30
    assert len({call.body["contactId"] for call in stub.calls if call.body}) == 300


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CPS", "abc"),
        ("CPS_STRATEGY", "leaky"),
        ("NODE_WORKER_URL", "ftp://worker"),
        ("REDIS_URL", "http://redis:6379"),
    ],
)
def test_a_bad_setting_fails_init_with_a_message_naming_it(
    start_runtime: Callable[..., Runtime], name: str, value: str
) -> None:
    runtime = start_runtime(**{name: value})

    error = runtime.api.wait_init_error()

    assert error.json()["errorMessage"].startswith(name)
    assert error.error_type == error.json()["errorType"] == "ConfigurationError"
    assert runtime.process.wait() != 0
    assert runtime.api.polls == 0


def test_every_metrics_line_printed_under_the_runtime_is_valid_emf(runtime: Runtime) -> None:
    runtime.api.run(make_batch(BATCH))
    runtime.api.run([make_task(BATCH + 1, phoneNumber="12345"), make_task(BATCH + 2)])
    runtime.process.stop()

    lines = emf_lines(runtime.process.stdout)

    assert len(lines) == 2, runtime.process.stdout
    assert [line_problems(line) for line in lines] == [[], []]


def test_cold_start_is_measured_from_process_start_to_the_first_response(
    dialer_env: dict[str, str], stub: WorkerStub
) -> None:
    seconds = cold_start_seconds(dialer_env)

    assert 0 < seconds < DEFAULT_WAIT_SECONDS
    assert len(stub.calls) == 1


# The checker itself: it must find each kind of violation, or a passing EMF test means nothing.

SPEC_EXAMPLE: dict[str, Any] = {
    "_aws": {
        "Timestamp": 1574109732004,
        "CloudWatchMetrics": [
            {
                "Namespace": "lambda-function-metrics",
                "Dimensions": [["functionVersion"]],
                "Metrics": [{"Name": "time", "Unit": "Milliseconds"}],
            }
        ],
    },
    "functionVersion": "$LATEST",
    "time": 100,
    "requestId": "989ffbf8-9ace-4817-a57c-e4dd734019ee",
}


def _changed(change: Callable[[dict[str, Any]], object]) -> str:
    document = json.loads(json.dumps(SPEC_EXAMPLE))
    change(document)
    return json.dumps(document)


def _directive(document: dict[str, Any]) -> dict[str, Any]:
    directive: dict[str, Any] = document["_aws"]["CloudWatchMetrics"][0]
    return directive


def test_the_emf_check_accepts_the_specifications_example() -> None:
    assert line_problems(json.dumps(SPEC_EXAMPLE)) == []


@pytest.mark.parametrize(
    ("line", "found"),
    [
        pytest.param(
            _changed(lambda d: d["_aws"].update(Timestamp=1574109732)), "Timestamp", id="seconds"
        ),
        pytest.param(
            _changed(lambda d: d["_aws"].update(Timestamp="1574109732004")),
            "Timestamp",
            id="timestamp-string",
        ),
        pytest.param(
            _changed(lambda d: d["_aws"].pop("CloudWatchMetrics")),
            "CloudWatchMetrics",
            id="no-directives",
        ),
        pytest.param(
            _changed(lambda d: _directive(d).update(Namespace="")), "Namespace", id="no-namespace"
        ),
        pytest.param(
            _changed(lambda d: d.pop("functionVersion")), "'functionVersion'", id="no-dimension"
        ),
        pytest.param(
            _changed(lambda d: d.update(functionVersion=1)), "'functionVersion'", id="dim-number"
        ),
        pytest.param(
            _changed(lambda d: _directive(d).update(Dimensions=[])), "Dimensions", id="no-sets"
        ),
        pytest.param(
            _changed(
                lambda d: (
                    _directive(d).update(Dimensions=[[f"d{i}" for i in range(31)]]),
                    d.update({f"d{i}": "x" for i in range(31)}),
                )
            ),
            "more than 30",
            id="31-dimensions",
        ),
        pytest.param(
            _changed(
                lambda d: (
                    _directive(d).update(Metrics=[{"Name": f"m{i}"} for i in range(101)]),
                    d.update({f"m{i}": 1 for i in range(101)}),
                )
            ),
            "more than 100",
            id="101-metrics",
        ),
        pytest.param(_changed(lambda d: d.update(time="100")), "'time'", id="metric-string"),
        pytest.param(_changed(lambda d: d.update(time=True)), "'time'", id="metric-bool"),
        pytest.param(
            _changed(lambda d: _directive(d)["Metrics"][0].update(Unit="Calls")),
            "Unit",
            id="bad-unit",
        ),
        pytest.param(
            _changed(
                lambda d: (
                    _directive(d)["Metrics"][0].update(Name="A.a"),
                    d.update(A={"a": 1}),
                )
            ),
            "'A.a'",
            id="nested-target",
        ),
        pytest.param(json.dumps(SPEC_EXAMPLE).replace("100", "NaN"), "JSON", id="nan"),
        pytest.param(json.dumps(SPEC_EXAMPLE) + " trailing", "JSON", id="trailing-data"),
        pytest.param(json.dumps([SPEC_EXAMPLE]), "root", id="array-root"),
    ],
)
def test_the_emf_check_finds_a_violation_of_the_specification(line: str, found: str) -> None:
    problems = line_problems(line)

    assert problems
    assert found in " ".join(problems)
