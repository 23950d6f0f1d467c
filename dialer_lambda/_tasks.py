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
from typing import Any, Final

from ._calendar import CalendarError, CallingSchedule, schedule_of

INVALID_PREFIX: Final = "invalid task: "
ACTIVE_STATUS: Final = "active"
MAX_ID_LENGTH: Final = 128
MAX_MESSAGE_ID_LENGTH: Final = 1024
MAX_URL_LENGTH: Final = 2048
MAX_ATTEMPTS: Final = 1000
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_IVR_FLOW_BYTES: Final = 64 * 1024
MAX_REPORTED_LENGTH: Final = 64
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
    """A task that passed validation: everything the dial command and the gates need."""

    campaign_id: str
    contact_id: str
    phone_number: str
    audio_file_url: str
    campaign_status: str
    attempts: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    ivr_flow: dict[str, Any] | None = None
    schedule: CallingSchedule = field(default_factory=lambda: CallingSchedule(None, ()))
    message_id: str | None = None

    def __post_init__(self) -> None:
        problems = [
            problem
            for problem in (
                _id_problem("campaignId", self.campaign_id),
                _id_problem("contactId", self.contact_id),
                _phone_problem(self.phone_number),
                _attempts_problem(self.attempts),
                _metadata_problem(self.metadata),
                _url_problem(self.audio_file_url),
                _ivr_flow_problem(self.ivr_flow),
                _status_problem(self.campaign_status),
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


def reported(raw: Any, key: str) -> str | None:
    """A field of the task as given, for the result's ``errors`` (never anything but a string)."""
    value = raw.get(key) if isinstance(raw, Mapping) else None
    return value[:MAX_REPORTED_LENGTH] if isinstance(value, str) else None


def parse_task(raw: Any) -> DialTask:
    """Check one task of the event and return it; raise `InvalidTask` naming every problem."""
    if not isinstance(raw, Mapping):
        raise InvalidTask([f"expected an object, got {_kind(raw)}"])
    problems: list[str] = []

    def need(problem: str | None) -> None:
        if problem is not None:
            problems.append(problem)

    campaign_id = raw.get("campaignId")
    contact_id = raw.get("contactId")
    phone_number = raw.get("phoneNumber")
    attempts = raw.get("attempts", 0)
    metadata = raw.get("metadata")
    metadata = {} if metadata is None else metadata
    need(_id_problem("campaignId", campaign_id))
    need(_id_problem("contactId", contact_id))
    need(_phone_problem(phone_number))
    need(_attempts_problem(attempts))
    need(_metadata_problem(metadata))

    campaign = raw.get("campaign")
    config: Any = {}
    if isinstance(campaign, Mapping):
        need(_status_problem(campaign.get("status"), "campaign.status"))
        campaign_ref = campaign.get("id")
        if campaign_ref is not None and campaign_ref != campaign_id:
            need("campaign.id does not match campaignId")
        config = campaign.get("config")
        if isinstance(config, Mapping):
            need(_url_problem(config.get("audioFileUrl"), "campaign.config.audioFileUrl"))
            need(_ivr_flow_problem(config.get("ivrFlow"), "campaign.config.ivrFlow"))
        else:
            need(
                "campaign.config is missing"
                if config is None
                else "campaign.config must be an object"
            )
            config = {}
    else:
        need("campaign is missing" if campaign is None else "campaign must be an object")
        campaign = {}
    schedule = CallingSchedule(None, ())
    try:
        schedule = schedule_of(campaign.get("timezone"), config.get("callingWindows"))
    except CalendarError as error:
        problems.append(f"campaign.{'' if str(error).startswith('timezone') else 'config.'}{error}")

    if problems:
        raise InvalidTask(problems)
    return DialTask(
        campaign_id=raw["campaignId"],
        contact_id=raw["contactId"],
        phone_number=raw["phoneNumber"],
        audio_file_url=config["audioFileUrl"],
        campaign_status=campaign["status"],
        attempts=attempts,
        metadata=dict(metadata),
        ivr_flow=None if config.get("ivrFlow") is None else dict(config["ivrFlow"]),
        schedule=schedule,
        message_id=message_id_of(raw),
    )


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


def _json_size(value: Any) -> int | None:
    try:
        return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError):
        return None


def _metadata_problem(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return f"metadata must be an object, got {_kind(value)}"
    size = _json_size(dict(value))
    if size is None:
        return "metadata must be plain JSON"
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes as JSON, more than the {MAX_METADATA_BYTES} allowed"
    return None


def _url_problem(value: Any, name: str = "audioFileUrl") -> str | None:
    if value is None:
        return f"{name} is missing"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL_LENGTH:
        return f"{name} must be a URL of at most {MAX_URL_LENGTH} characters"
    return None


def _ivr_flow_problem(value: Any, name: str = "ivrFlow") -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return f"{name} must be an object, got {_kind(value)}"
    size = _json_size(dict(value))
    if size is None:
        return f"{name} must be plain JSON"
    if size > MAX_IVR_FLOW_BYTES:
        return f"{name} is {size} bytes as JSON, more than the {MAX_IVR_FLOW_BYTES} allowed"
    return None


def _status_problem(value: Any, name: str = "campaign status") -> str | None:
    if value is None:
        return f"{name} is missing"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        return f"{name} must be a string"
    return None
