"""Validation of the enriched dial tasks a batch delivers, and the gates that keep a task undialed.

A task comes from a queue that anybody with send rights can write to, through an enrichment
that may have bugs: nothing in it is trusted. Each task is checked on its own so that one bad
task fails alone while the rest of the batch goes on, and the error names every problem found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Final

from ._calendar import CalendarError, CallingSchedule, schedule_of
from ._logging import mask_phone

INVALID_PREFIX: Final = "invalid task: "
ACTIVE_STATUS: Final = "active"
MAX_ID_LENGTH: Final = 128
MAX_MESSAGE_ID_LENGTH: Final = 1024
MAX_URL_LENGTH: Final = 2048
MAX_ATTEMPTS: Final = 1000
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_IVR_FLOW_BYTES: Final = 64 * 1024
MAX_REPORTED_LENGTH: Final = 64
MAX_CAMPAIGN_LIMIT: Final = 1_000_000
# E.164: a "+", a country code that does not start with 0, at most 15 digits in all. ASCII only:
# "\d" would also take Arabic-Indic and other Unicode digits that no carrier dials.
E164: Final = re.compile(r"\+[1-9][0-9]{7,14}", re.ASCII)
# Ids end up in the callId (an Asterisk channel id) and in log lines: no whitespace or controls.
_ID: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")


class InvalidTask(ValueError):
    """A task that must not be dialed; ``str()`` starts with ``"invalid task: "``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(INVALID_PREFIX + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class DialTask:
    """A task that passed validation: everything the dial command and the gates need.

    Problems are named by the field's path in the pipe's task (``campaign.config.ivrFlow``).
    """

    campaign_id: str
    contact_id: str
    phone_number: str
    audio_file_url: str
    campaign_status: str
    attempts: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    ivr_flow: dict[str, Any] | None = None
    schedule: CallingSchedule = field(default_factory=lambda: CallingSchedule(None, ()))
    max_concurrent_calls: int | None = None
    """``campaign.config.maxConcurrentCalls``: the campaign's calls in progress at most."""
    max_cps: int | None = None
    """``campaign.config.maxCps``: the campaign's calls a second at most, beside MAX_CPS."""

    def __post_init__(self) -> None:
        limited = self.max_concurrent_calls is not None or self.max_cps is not None
        problems = [
            problem
            for problem in (
                _id_problem("campaignId", self.campaign_id),
                _limit_problem("campaign.config.maxConcurrentCalls", self.max_concurrent_calls),
                _limit_problem("campaign.config.maxCps", self.max_cps),
                _scope_problem(self.campaign_id) if limited else None,
                _id_problem("contactId", self.contact_id),
                _phone_problem(self.phone_number),
                _attempts_problem(self.attempts),
                _object_problem("metadata", self.metadata, MAX_METADATA_BYTES),
                _status_problem(self.campaign_status),
                _url_problem(self.audio_file_url),
                None
                if self.ivr_flow is None
                else _object_problem("campaign.config.ivrFlow", self.ivr_flow, MAX_IVR_FLOW_BYTES),
            )
            if problem is not None
        ]
        if problems:
            raise InvalidTask(problems)

    def gate(self, now: datetime) -> str | None:
        """Why this task must not be dialed now (and not retried either), or None."""
        if self.campaign_status != ACTIVE_STATUS:
            return f"campaign {self.campaign_id} is not active (status {self.campaign_status!r})"
        if not self.schedule.allows(now):
            zone = self.schedule.timezone
            local = now.astimezone(zone).strftime("%a %H:%M") if zone else ""
            return f"outside the campaign's calling windows ({local} in {zone})"
        return None


def message_id_of(raw: Any) -> str | None:
    """The SQS message id the pipe's enrichment passed through, when it is usable."""
    value = raw.get("messageId") if isinstance(raw, Mapping) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_MESSAGE_ID_LENGTH:
        return value
    return None


def _reported(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, Mapping) else None
    return value[:MAX_REPORTED_LENGTH] if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Reported:
    """A task's ids as given (never anything but strings), read once for the result's
    ``errors``, ``batchItemFailures`` and every log line about the task, valid or not."""

    campaign_id: str | None
    contact_id: str | None
    phone_number: str | None
    message_id: str | None

    @classmethod
    def of(cls, raw: Any) -> Reported:
        get = partial(_reported, raw)
        return cls(get("campaignId"), get("contactId"), get("phoneNumber"), message_id_of(raw))

    def log_fields(self) -> dict[str, Any]:
        """The task's fields on each log line about it, the phone number masked."""
        phone = None if self.phone_number is None else mask_phone(self.phone_number)
        return {
            "campaignId": self.campaign_id,
            "contactId": self.contact_id,
            "phoneNumber": phone,
            "messageId": self.message_id,
        }


def parse_task(raw: Any) -> DialTask:
    """Check one task of the event and return it; raise `InvalidTask` naming every problem.

    The shape of the campaign is checked here and the values in `DialTask`, each once.
    """
    if not isinstance(raw, Mapping):
        raise InvalidTask([f"expected an object, got {_kind(raw)}"])
    if "campaignId" not in raw and "body" in raw and ("receiptHandle" in raw or "md5OfBody" in raw):
        raise InvalidTask(
            [
                "this is a raw SQS record, not an enriched dial task: the task is in its 'body'; "
                "the pipe needs its enrichment step (see docs/deployment.md)"
            ]
        )
    values: Any = raw  # JSON: whatever its fields hold, `DialTask` checks
    shape: list[str] = []
    campaign = values.get("campaign")
    config: Any = None
    if not isinstance(campaign, Mapping):
        shape.append("campaign is missing" if campaign is None else "campaign must be an object")
        campaign, hidden = {}, "campaign."  # a broken parent hides its fields' problems
    else:
        if campaign.get("id") not in (None, values.get("campaignId")):
            shape.append("campaign.id does not match campaignId")
        config, hidden = campaign.get("config"), ""
        if not isinstance(config, Mapping):
            missing = config is None
            shape.append(f"campaign.config {'is missing' if missing else 'must be an object'}")
            hidden = "campaign.config."
    if not isinstance(config, Mapping):
        config = {}
    schedule = CallingSchedule(None, ())
    try:
        schedule = schedule_of(campaign.get("timezone"), config.get("callingWindows"))
    except CalendarError as error:
        shape.append(f"campaign.{'' if str(error).startswith('timezone') else 'config.'}{error}")
    metadata = values.get("metadata")
    try:
        task = DialTask(
            campaign_id=values.get("campaignId"),
            contact_id=values.get("contactId"),
            phone_number=values.get("phoneNumber"),
            audio_file_url=config.get("audioFileUrl"),
            campaign_status=campaign.get("status"),
            attempts=values.get("attempts", 0),
            metadata={} if metadata is None else _copied(metadata),
            ivr_flow=_copied(config.get("ivrFlow")),
            schedule=schedule,
            max_concurrent_calls=config.get("maxConcurrentCalls"),
            max_cps=config.get("maxCps"),
        )
    except InvalidTask as invalid:
        fields = [p for p in invalid.problems if not (hidden and p.startswith(hidden))]
        raise InvalidTask([*fields, *shape]) from None
    if shape:
        raise InvalidTask(shape)
    return task


def _copied(value: Any) -> Any:
    """A JSON object as a dict of our own; anything else as it is, for `DialTask` to refuse."""
    return dict(value) if isinstance(value, Mapping) else value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _id_problem(name: str, value: Any) -> str | None:
    if value is None:
        return f"{name} is missing"
    if not isinstance(value, str):
        return f"{name} must be a string, got {_kind(value)}"
    if not 0 < len(value) <= MAX_ID_LENGTH or not _ID.fullmatch(value):
        return (
            f"{name} must be 1 to {MAX_ID_LENGTH} characters without spaces or control characters"
        )
    return None


def _limit_problem(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be an integer, got {_kind(value)}"
    if not 0 < value <= MAX_CAMPAIGN_LIMIT:
        return f"{name} must be between 1 and {MAX_CAMPAIGN_LIMIT}"
    return None


def _scope_problem(campaign_id: Any) -> str | None:
    # A limited campaign's id names its Redis keys: braces would pick a cluster slot.
    if isinstance(campaign_id, str) and (
        "{" in campaign_id or "}" in campaign_id or not campaign_id.isprintable()
    ):
        return (
            "campaignId must not hold braces or unprintable characters when the campaign has "
            "maxConcurrentCalls or maxCps"
        )
    return None


def _phone_problem(value: Any) -> str | None:
    # The number itself is never quoted: the error ends up in logs.
    if value is None:
        return "phoneNumber is missing"
    if not isinstance(value, str):
        return f"phoneNumber must be a string, got {_kind(value)}"
    if not E164.fullmatch(value):
        return "phoneNumber must be in E.164 format ('+', then 8 to 15 digits)"
    return None


def _attempts_problem(value: Any) -> str | None:
    # bool is an int in Python, but `true` is no attempt count.
    if isinstance(value, bool) or not isinstance(value, int):
        return f"attempts must be an integer, got {_kind(value)}"
    if not 0 <= value <= MAX_ATTEMPTS:
        return f"attempts must be between 0 and {MAX_ATTEMPTS}"
    return None


def _object_problem(name: str, value: Any, max_bytes: int) -> str | None:
    if not isinstance(value, Mapping):
        return f"{name} must be an object, got {_kind(value)}"
    try:
        size = len(json.dumps(dict(value), allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError):
        return f"{name} must be plain JSON"
    if size > max_bytes:
        return f"{name} is {size} bytes as JSON, more than the {max_bytes} allowed"
    return None


def _url_problem(value: Any) -> str | None:
    name = "campaign.config.audioFileUrl"
    if value is None:
        return f"{name} is missing"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL_LENGTH:
        return f"{name} must be a URL of at most {MAX_URL_LENGTH} characters"
    return None


def _status_problem(value: Any) -> str | None:
    if value is None:
        return "campaign.status is missing"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        return "campaign.status must be a string"
    return None
