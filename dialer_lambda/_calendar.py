"""Calling windows: when a campaign may call, in the campaign's own time zone.

``campaign.config.callingWindows`` is a JSON array (empty or absent: any time) of windows such
as ``{"days": ["mon", "fri"], "start": "09:00", "end": "20:00"}``, in ``campaign.timezone`` (an
IANA name); docs/dialer.md has the full format. ``start`` is included and ``end`` is not; an ``end``
of ``"00:00"`` means the midnight that ends the day; an ``end`` before the ``start`` crosses
midnight; ``start`` equal to ``end`` is rejected as ambiguous (a whole day is 00:00 to 24:00).

A task may be dialed when the current local time falls inside any one window. Local time comes
from the Lambda's clock: minute resolution needs no shared clock, unlike the CPS windows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTES_PER_DAY: Final = 24 * 60
DAYS_PER_WEEK: Final = 7
MAX_WINDOWS: Final = 64
MAX_TIMEZONE_LENGTH: Final = 64
_DAY_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_NUMBERS: Final = {
    **{name: number for number, name in enumerate(_DAY_NAMES)},
    **{name[:3]: number for number, name in enumerate(_DAY_NAMES)},
}
ALL_DAYS: Final = frozenset(range(DAYS_PER_WEEK))
_TIME = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])", re.ASCII)


class CalendarError(ValueError):
    """A calling window or time zone is malformed; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Days (0 is Monday) and local minutes of the day, ``start`` included, ``end`` excluded."""

    days: frozenset[int]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.days or not self.days <= ALL_DAYS:
            raise CalendarError("days must name at least one day of the week")
        if not 0 <= self.start < MINUTES_PER_DAY:
            raise CalendarError("start must be a time of day before 24:00")
        if not 0 < self.end <= MINUTES_PER_DAY:
            raise CalendarError("end must be a time of day after 00:00 and no later than 24:00")
        if self.start == self.end:
            raise CalendarError("start and end must differ (a whole day is 00:00 to 24:00)")

    def contains(self, local: datetime) -> bool:
        weekday = local.weekday()
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Crosses midnight: the evening part belongs to the listed day, the early-morning part to
        # the day after it.
        yesterday = (weekday - 1) % DAYS_PER_WEEK
        return (weekday in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class CallingSchedule:
    """A campaign's windows in its time zone; no windows means no restriction."""

    timezone: ZoneInfo | None
    windows: tuple[CallingWindow, ...]

    def __post_init__(self) -> None:
        if self.windows and self.timezone is None:
            raise CalendarError("timezone is required when callingWindows are given")

    def allows(self, now: datetime) -> bool:
        """Whether ``now`` (an aware datetime) falls inside a window."""
        if not self.windows or self.timezone is None:
            return True
        local = now.astimezone(self.timezone)
        return any(window.contains(local) for window in self.windows)


def parse_timezone(value: Any) -> ZoneInfo:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TIMEZONE_LENGTH:
        raise CalendarError("timezone must be an IANA time zone name such as 'Asia/Jerusalem'")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError("timezone is not a known IANA time zone name") from None


def parse_windows(value: Any) -> tuple[CallingWindow, ...]:
    """Parse ``callingWindows``; errors name the window (``callingWindows[1].end ...``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CalendarError("callingWindows must be a list of windows")
    if len(value) > MAX_WINDOWS:
        raise CalendarError(f"callingWindows must hold at most {MAX_WINDOWS} windows")
    return tuple(
        _parse_window(item, f"callingWindows[{index}]") for index, item in enumerate(value)
    )


def _parse_window(value: Any, where: str) -> CallingWindow:
    if not isinstance(value, dict):
        raise CalendarError(f"{where} must be an object with days, start and end")
    try:
        return CallingWindow(
            days=_parse_days(value.get("days"), f"{where}.days"),
            start=_parse_time(value.get("start"), f"{where}.start"),
            end=_parse_time(value.get("end"), f"{where}.end") or MINUTES_PER_DAY,
        )
    except CalendarError as error:
        if str(error).startswith(where):
            raise
        raise CalendarError(f"{where}: {error}") from None


def _parse_days(value: Any, where: str) -> frozenset[int]:
    if value is None:
        return ALL_DAYS
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise CalendarError(f"{where} must be a non-empty list of day names such as 'mon'")
    days: set[int] = set()
    for day in value:
        number = DAY_NUMBERS.get(day.lower()) if isinstance(day, str) else None
        if number is None:
            raise CalendarError(f"{where} holds an unknown day; use mon, tue, ..., sun")
        days.add(number)
    return frozenset(days)


def _parse_time(value: Any, where: str) -> int:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise CalendarError(f"{where} must be a time 'HH:MM' between 00:00 and 24:00")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > MINUTES_PER_DAY:
        raise CalendarError(f"{where} must be a time 'HH:MM' between 00:00 and 24:00")
    return minutes


def schedule_of(timezone: Any, windows: Any) -> CallingSchedule:
    """Build a schedule from a campaign's raw ``timezone`` and ``callingWindows``."""
    parsed = parse_windows(windows)
    zone = None if timezone is None else parse_timezone(timezone)
    return CallingSchedule(timezone=zone, windows=parsed)
