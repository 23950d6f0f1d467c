"""Task validation and calling windows, as units."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cps_limiter import FixedWindow, Limiter
from dialer_lambda import CallingWindow, DialTask, InvalidTask, parse_task
from dialer_lambda._calendar import CalendarError, CallingSchedule, parse_windows, schedule_of
from dialer_lambda._claims import ClaimStore, claim_key
from tests.support.dialer import SEED_TASK, make_task

JERUSALEM = ZoneInfo("Asia/Jerusalem")


def test_the_seeds_task_parses_into_what_the_dial_command_needs() -> None:
    task = parse_task(SEED_TASK)

    assert (task.campaign_id, task.contact_id, task.phone_number) == (
        "campaign-123",
        "contact-456",
        "+972501234567",
    )
    assert task.audio_file_url == "https://s3.amazonaws.com/bucket/audio.mp3"
    assert task.ivr_flow == SEED_TASK["campaign"]["config"]["ivrFlow"]
    assert (task.attempts, task.campaign_status) == (0, "active")


def test_missing_attempts_and_metadata_default_to_a_first_attempt_with_no_metadata() -> None:
    raw = make_task(1)
    del raw["attempts"], raw["metadata"]

    task = parse_task(raw)

    assert (task.attempts, task.metadata) == (0, {})


def test_a_task_without_an_ivr_flow_is_valid() -> None:
    raw = make_task(1)
    del raw["campaign"]["config"]["ivrFlow"]

    assert parse_task(raw).ivr_flow is None


@pytest.mark.parametrize(
    "phone", ["+972501234567", "+14155550100", "+4930123456", "+861234567890123"]
)
def test_e164_numbers_are_accepted(phone: str) -> None:
    assert parse_task(make_task(1, phoneNumber=phone)).phone_number == phone


@pytest.mark.parametrize(
    "phone",
    [
        "972501234567",
        "+972 50 123 4567",
        "+972-50-123-4567",
        "+1234567",
        "+1234567890123456",
        "+0972501234567",
        "+97250123456a",
        "+972501234567\n",
        "",
    ],
)
def test_anything_but_e164_is_refused(phone: str) -> None:
    with pytest.raises(InvalidTask, match=r"E\.164"):
        parse_task(make_task(1, phoneNumber=phone))


def test_an_invalid_task_error_starts_with_invalid_task() -> None:
    with pytest.raises(InvalidTask) as raised:
        parse_task({})

    assert str(raised.value).startswith("invalid task: ")
    assert "campaignId is missing" in raised.value.problems


def test_a_dial_task_built_directly_is_validated_too() -> None:
    with pytest.raises(InvalidTask, match=r"E\.164"):
        DialTask("c", "k", "0501234567", "https://a/b.mp3", "active")


def test_metadata_of_up_to_16_kib_is_accepted() -> None:
    blob = "x" * (16 * 1024 - len('{"b":""}'))

    assert parse_task(make_task(1, metadata={"b": blob})).metadata == {"b": blob}


def test_metadata_that_is_not_plain_json_is_refused() -> None:
    with pytest.raises(InvalidTask, match="metadata must be plain JSON"):
        parse_task(make_task(1, metadata={"when": datetime(2024, 1, 1)}))


# -- calling windows --------------------------------------------------------------------------


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    """January 2024: the 15th is a Monday."""
    return datetime(2024, 1, day, hour, minute, tzinfo=JERUSALEM)


def _window(days: list[str] | None, start: str, end: str) -> CallingWindow:
    spec: dict[str, Any] = {"start": start, "end": end}
    if days is not None:
        spec["days"] = days
    [window] = parse_windows([spec])
    return window


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (_local(15, 9, 0), True),  # start included
        (_local(15, 19, 59), True),
        (_local(15, 20, 0), False),  # end excluded
        (_local(15, 8, 59), False),
        (_local(16, 12, 0), False),  # Tuesday is not listed
    ],
)
def test_a_window_covers_its_days_from_start_to_before_end(at: datetime, inside: bool) -> None:
    assert _window(["mon"], "09:00", "20:00").contains(at) is inside


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (_local(20, 22, 0), True),  # Saturday evening
        (_local(21, 1, 59), True),  # Sunday early morning belongs to Saturday's window
        (_local(21, 2, 0), False),
        (_local(21, 22, 0), False),  # Sunday evening: Sunday is not listed
        (_local(20, 1, 0), False),  # Saturday early morning would be Friday's
    ],
)
def test_a_window_whose_end_is_before_its_start_crosses_midnight(
    at: datetime, inside: bool
) -> None:
    assert _window(["sat"], "20:00", "02:00").contains(at) is inside


def test_a_window_without_days_covers_every_day() -> None:
    window = _window(None, "00:00", "24:00")

    assert all(window.contains(_local(day, 12)) for day in range(15, 22))


def test_an_end_of_midnight_means_the_end_of_the_day() -> None:
    window = _window(["mon"], "18:00", "00:00")

    assert window.contains(_local(15, 23, 59))
    assert not window.contains(_local(16, 0, 30))


@pytest.mark.parametrize("day", ["mon", "Monday", "MON", "monday"])
def test_day_names_are_three_letters_or_full_in_any_case(day: str) -> None:
    assert _window([day], "09:00", "10:00").days == frozenset({0})


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"start": "9:00", "end": "10:00"}, "callingWindows[0].start"),
        ({"start": "09:00", "end": "24:01"}, "callingWindows[0].end"),
        ({"start": "24:00", "end": "10:00"}, "start must be a time of day before 24:00"),
        ({"start": "09:00", "end": "09:00"}, "start and end must differ"),
        ({"days": ["funday"], "start": "09:00", "end": "10:00"}, "unknown day"),
        ({"days": "mon", "start": "09:00", "end": "10:00"}, "callingWindows[0].days"),
        ({"days": [], "start": "09:00", "end": "10:00"}, "callingWindows[0].days"),
        ("09:00-10:00", "callingWindows[0] must be an object"),
    ],
)
def test_a_malformed_window_is_refused_naming_the_field(spec: Any, named: str) -> None:
    with pytest.raises(CalendarError) as raised:
        parse_windows([spec])

    assert named in str(raised.value)


def test_windows_must_be_a_list() -> None:
    with pytest.raises(CalendarError, match="callingWindows must be a list"):
        parse_windows({"start": "09:00"})


def test_windows_require_a_time_zone() -> None:
    with pytest.raises(CalendarError, match="timezone is required"):
        schedule_of(None, [{"start": "09:00", "end": "10:00"}])


def test_a_schedule_reads_the_time_in_the_campaigns_time_zone() -> None:
    schedule = schedule_of("Asia/Jerusalem", [{"start": "09:00", "end": "10:00"}])

    # 07:30 UTC is 09:30 in Jerusalem in January, 08:30 in London.
    assert schedule.allows(datetime(2024, 1, 15, 7, 30, tzinfo=UTC))
    london = schedule_of("Europe/London", [{"start": "09:00", "end": "10:00"}])
    assert not london.allows(datetime(2024, 1, 15, 7, 30, tzinfo=UTC))


def test_no_windows_allow_any_time() -> None:
    assert CallingSchedule(None, ()).allows(datetime(2024, 1, 15, 3, 0, tzinfo=UTC))


# -- claim keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "contact_id", ["*", "{tag}", "a\nb", "x" * 10_000, "contact:1", "../../etc"]
)
def test_a_claim_key_stays_under_its_prefix_whatever_the_ids_hold(contact_id: str) -> None:
    key = claim_key("campaign", contact_id, 0, "dialer:claim")

    assert key.startswith("dialer:claim:")
    assert len(key) == len("dialer:claim:") + 64
    assert all(char in "0123456789abcdef" for char in key.removeprefix("dialer:claim:"))


def test_claim_keys_differ_by_campaign_contact_and_attempt() -> None:
    keys = {
        claim_key("c1", "k1", 0),
        claim_key("c1", "k1", 1),
        claim_key("c1", "k2", 0),
        claim_key("c2", "k1", 0),
        claim_key("c1:k", "1", 0),
        claim_key("c1", "k:1", 0),
    }

    assert len(keys) == 6


def test_a_claim_store_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl"):
        ClaimStore(limiter=None, ttl=0)  # type: ignore[arg-type]


def test_a_redis_that_restarted_empty_does_not_make_a_container_think_it_is_alone() -> None:
    limiter = Limiter.from_url(f"memory://{uuid.uuid4().hex}", FixedWindow(10))
    stores = [ClaimStore(limiter, ttl=60) for _ in range(3)]
    for number, store in enumerate(stores):
        store.claim([f"before-{number}"], "owner", 60)
    _, before = stores[0].claim(["again"], "owner", 60)
    limiter.client.flushall()  # the restart: every heartbeat is gone

    _, after = stores[0].claim(["after"], "owner", 60)

    assert (before, after) == (3, 3)
