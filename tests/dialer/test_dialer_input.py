"""Malformed events and tasks, and the campaign gates: clear errors, nobody dialed, every task
accounted for."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from dialer_lambda import Dialer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, Lines, make_batch, make_task

# A Tuesday, 10:30 in Jerusalem (UTC+2 in January).
TUESDAY_MORNING = datetime(2024, 1, 16, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"Records": []}, "Records"),
        (make_task(1), "dict"),
        (None, "NoneType"),
        ("[]", "str"),
        (42, "int"),
    ],
    ids=["sqs-event", "one-task", "null", "string", "number"],
)
def test_an_event_that_is_not_a_list_raises_a_clear_value_error(
    dialer: Dialer, event: Any, named: str
) -> None:
    with pytest.raises(ValueError, match="event must be a JSON array of dial tasks") as raised:
        dialer.process(event, FakeContext())

    assert named in str(raised.value)


def test_an_empty_batch_gives_an_empty_result(dialer: Dialer) -> None:
    assert dialer.process([], FakeContext()) == {
        "totalProcessed": 0,
        "successful": 0,
        "failed": 0,
        "rateLimited": 0,
        "duplicates": 0,
        "errors": [],
        "batchItemFailures": [],
    }


def _without(key: str) -> dict[str, Any]:
    task = make_task(1)
    del task[key]
    return task


def _campaign(**changes: Any) -> dict[str, Any]:
    task = make_task(1)
    task["campaign"].update(changes)
    return task


def _config(**changes: Any) -> dict[str, Any]:
    task = make_task(1)
    task["campaign"]["config"].update(changes)
    return task


INVALID_TASKS = [
    pytest.param(_without("campaignId"), "campaignId is missing", id="no-campaign-id"),
    pytest.param(_without("contactId"), "contactId is missing", id="no-contact-id"),
    pytest.param(_without("phoneNumber"), "phoneNumber is missing", id="no-phone"),
    pytest.param(make_task(1, phoneNumber="0501234567"), "E.164", id="local-phone"),
    pytest.param(make_task(1, phoneNumber="+0501234567"), "E.164", id="phone-zero-cc"),
    pytest.param(make_task(1, phoneNumber="+97250123456789012"), "E.164", id="phone-too-long"),
    pytest.param(make_task(1, phoneNumber="+٩٧٢٥٠١٢٣٤٥٦٧"), "E.164", id="phone-arabic-digits"),
    pytest.param(make_task(1, phoneNumber=972501234567), "phoneNumber must be a string", id="int"),
    pytest.param(make_task(1, contactId=""), "contactId must be 1 to 128", id="empty-id"),
    pytest.param(make_task(1, contactId="a b"), "contactId must be", id="id-with-space"),
    pytest.param(make_task(1, contactId="x" * 10_000), "contactId must be", id="id-10k"),
    pytest.param(make_task(1, contactId=["c"]), "contactId must be a string", id="id-list"),
    pytest.param(make_task(1, attempts=True), "attempts must be an integer", id="attempts-bool"),
    pytest.param(make_task(1, attempts="0"), "attempts must be an integer", id="attempts-str"),
    pytest.param(make_task(1, attempts=-1), "attempts must be between", id="attempts-negative"),
    pytest.param(make_task(1, metadata=[1]), "metadata must be an object", id="metadata-list"),
    pytest.param(
        make_task(1, metadata={"blob": "x" * 20_000}), "metadata is 20", id="metadata-huge"
    ),
    pytest.param(make_task(1, campaign=None), "campaign is missing", id="no-campaign"),
    pytest.param(make_task(1, campaign="c"), "campaign must be an object", id="campaign-str"),
    pytest.param(_campaign(status=None), "campaign.status is missing", id="no-status"),
    pytest.param(_campaign(id="other"), "campaign.id does not match", id="campaign-mismatch"),
    pytest.param(_campaign(config=None), "campaign.config is missing", id="no-config"),
    pytest.param(_config(audioFileUrl=None), "audioFileUrl is missing", id="no-audio"),
    pytest.param(_config(ivrFlow="flow"), "ivrFlow must be an object", id="ivr-str"),
    pytest.param(_campaign(timezone="Mars/Olympus"), "campaign.timezone", id="bad-timezone"),
    pytest.param(
        _config(callingWindows=[{"start": "9am", "end": "17:00"}]),
        "campaign.config.callingWindows[0].start",
        id="bad-window",
    ),
]


@pytest.mark.parametrize(("task", "named"), INVALID_TASKS)
def test_an_invalid_task_fails_with_an_error_naming_the_problem(
    dialer: Dialer, task: Any, named: str
) -> None:
    result = dialer.process([task, make_task(2)], FakeContext())

    [error] = result["errors"]
    assert error["error"].startswith("invalid task: ")
    assert named in error["error"]
    assert (result["failed"], result["successful"], result["totalProcessed"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("task", "named"),
    [(["not", "a", "task"], "got list"), (None, "got null"), ("task", "got str"), (7, "got int")],
)
def test_a_task_that_is_not_an_object_brings_the_whole_batch_back_after_the_others_are_dialed(
    dialer: Dialer, stub: WorkerStub, lines: Lines, task: Any, named: str
) -> None:
    # It has no messageId to list in batchItemFailures: only a failed invocation returns it,
    # with an error that names the item, not a rate limit.
    with pytest.raises(ValueError, match=r"event\[0\] is ") as raised:
        dialer.process([task, make_task(2)], FakeContext())
    assert type(raised.value) is ValueError

    [logged] = lines.events("invalid_task")
    assert logged["message"] == f"invalid task: expected an object, {named}"
    assert len(stub.calls) == 1


def test_an_invalid_task_is_never_dialed_and_comes_back_for_the_dead_letter_queue(
    dialer: Dialer,
    stub: WorkerStub,
) -> None:
    result = dialer.process([make_task(1, phoneNumber="12345")], FakeContext())

    assert stub.calls == []
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-1"}]


def test_an_invalid_task_names_all_its_problems_at_once(dialer: Dialer) -> None:
    task = make_task(1, phoneNumber="x", attempts=None)
    del task["campaignId"]

    [error] = dialer.process([task], FakeContext())["errors"]

    assert "campaignId is missing" in error["error"]
    assert "E.164" in error["error"]
    assert "attempts" in error["error"]


def test_a_batch_of_garbage_accounts_for_every_task(dialer: Dialer, stub: WorkerStub) -> None:
    batch: list[Any] = [param.values[0] for param in INVALID_TASKS]

    result = dialer.process([*batch, *make_batch(3)], FakeContext())

    assert result["totalProcessed"] == len(batch) + 3
    assert (result["failed"], result["successful"]) == (len(batch), 3)
    assert len(stub.calls) == 3


def test_an_invalid_task_is_logged_as_invalid_task(dialer: Dialer, lines: Lines) -> None:
    dialer.process([make_task(1, phoneNumber="12345")], FakeContext())

    [logged] = lines.events("invalid_task")
    assert logged["messageId"] == "m-1"
    assert "phoneNumber" in logged["message"]


def test_a_task_with_an_unusable_message_id_that_must_come_back_raises(
    dialer: Dialer, stub: WorkerStub
) -> None:
    from cps_limiter import RateLimitExceeded

    with pytest.raises(RateLimitExceeded, match="messageId"):
        dialer.process([make_task(1, phoneNumber="1", messageId=7), make_task(2)], FakeContext())

    assert len(stub.calls) == 1


@pytest.mark.parametrize("status", ["paused", "completed", "draft", ""])
def test_a_task_of_a_campaign_that_is_not_active_fails_and_is_not_retried(
    dialer: Dialer, stub: WorkerStub, status: str
) -> None:
    result = dialer.process([_campaign(status=status)], FakeContext())

    [error] = result["errors"]
    assert "is not active" in error["error"] or "campaign.status" in error["error"]
    assert stub.calls == []
    if status:
        assert result["batchItemFailures"] == []


WINDOWS = [
    {"days": ["sun", "mon", "tue", "wed", "thu"], "start": "09:00", "end": "20:00"},
    {"days": ["fri"], "start": "09:00", "end": "13:00"},
]


@pytest.mark.parametrize(
    ("now", "dialed"),
    [
        (TUESDAY_MORNING, True),
        (datetime(2024, 1, 16, 18, 0, tzinfo=UTC), False),  # Tuesday 20:00 local: end excluded
        (datetime(2024, 1, 16, 17, 59, tzinfo=UTC), True),  # Tuesday 19:59 local
        (datetime(2024, 1, 19, 10, 0, tzinfo=UTC), True),  # Friday 12:00 local
        (datetime(2024, 1, 19, 11, 0, tzinfo=UTC), False),  # Friday 13:00 local
        (datetime(2024, 1, 20, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2024, 1, 16, 6, 59, tzinfo=UTC), False),  # Tuesday 08:59 local
    ],
)
def test_a_task_is_dialed_only_inside_its_campaigns_calling_windows_in_its_time_zone(
    dialer: Dialer, stub: WorkerStub, now: datetime, dialed: bool
) -> None:
    at_now = dataclasses.replace(dialer, clock=lambda: now)

    result = at_now.process([_config(callingWindows=WINDOWS)], FakeContext())

    assert result["successful"] == int(dialed)
    assert len(stub.calls) == int(dialed)
    if not dialed:
        assert result["errors"][0]["error"].startswith("outside the campaign's calling windows")
        assert result["batchItemFailures"] == []


def test_a_campaign_without_calling_windows_may_call_at_any_time(
    dialer: Dialer, stub: WorkerStub
) -> None:
    saturday_night = dataclasses.replace(
        dialer, clock=lambda: datetime(2024, 1, 20, 1, 0, tzinfo=UTC)
    )

    result = saturday_night.process([_config(callingWindows=[])], FakeContext())

    assert result["successful"] == 1


def test_raw_sqs_records_say_the_task_is_in_the_body_and_the_pipe_needs_its_enrichment(
    dialer: Dialer, stub: WorkerStub
) -> None:
    records = [
        {
            "messageId": f"m-{index}",
            "receiptHandle": "AQEB...",
            "body": '{"campaignId": "c"}',
            "attributes": {"ApproximateReceiveCount": "1"},
            "eventSource": "aws:sqs",
        }
        for index in range(3)
    ]

    result = dialer.process(records, FakeContext())

    assert result["failed"] == 3
    assert len(result["batchItemFailures"]) == 3
    for error in result["errors"]:
        assert "'body'" in error["error"]
        assert "enrichment" in error["error"]
    assert stub.calls == []
