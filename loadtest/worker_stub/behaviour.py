"""How the stub answers a dial: `Behaviour`, and what each of its fields accepts.

Each field is declared once, with a `Setting` in its metadata: its validation, its help text
and, for a fault, the `Outcome` it causes. The camelCase JSON keys of ``POST /_control``, the
command-line flags and the checks in `Behaviour.__post_init__` all follow from those fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Final, TypeGuard

# Longer than any sensible dial timeout (DIAL_TIMEOUT_SECONDS defaults to 5) yet bounded, so a
# forgotten hanging request cannot keep a test process alive for long.
DEFAULT_HANG_SECONDS: Final = 30.0
DEFAULT_HUGE_BYTES: Final = 8 * 1024 * 1024
DEFAULT_ERROR: Final = "Asterisk originate failed"

# Weyl sequences: the n-th request's fraction is frac(n * alpha). They are spread evenly over
# [0, 1), so "a rate of 0.1" is about every tenth request, reproducibly, with no random seed.
_FAULT_STEP: Final = (math.sqrt(5.0) - 1.0) / 2.0
_DELAY_STEP: Final = math.sqrt(2.0) - 1.0
_RATE_SUM_SLACK: Final = 1e-9
_SETTING: Final = "setting"


class Outcome(StrEnum):
    """What the stub did with one request to `/dial`."""

    OK = "ok"
    FAIL = "fail"
    TIMEOUT = "timeout"
    HTTP_429 = "http_429"
    HTTP_503 = "http_503"
    HTTP_500 = "http_500"
    GARBAGE = "garbage"
    HUGE = "huge"
    CLOSE = "close"
    BAD_REQUEST = "bad_request"


def camel(name: str) -> str:
    """The JSON key of a field: ``delay_ms`` is ``delayMs``, ``http_503`` is ``http503``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Kind:
    """The values a field accepts, named for the error, and how the command line reads one."""

    accepts: Callable[[object], bool]
    requirement: str
    """Ends "<field> must be ..." in the error for a value it does not accept."""
    parse: Callable[[str], Any]


FRACTION: Final = Kind(
    lambda value: is_number(value) and 0.0 <= value <= 1.0, "a fraction between 0 and 1", float
)
NON_NEGATIVE: Final = Kind(
    lambda value: is_number(value) and math.isfinite(value) and value >= 0,
    "a finite number >= 0",
    float,
)
POSITIVE: Final = Kind(
    lambda value: is_number(value) and math.isfinite(value) and value > 0, "a number > 0", float
)
POSITIVE_INT: Final = Kind(
    lambda value: isinstance(value, int) and not isinstance(value, bool) and value > 0,
    "an int > 0",
    int,
)
TEXT: Final = Kind(lambda value: isinstance(value, str), "a string", str)


@dataclass(frozen=True)
class Setting:
    """What one `Behaviour` field accepts, and what it means on the command line."""

    kind: Kind
    help: str | None = None
    fault: Outcome | None = None
    """The outcome that this fraction of requests gets."""

    def flag(self, name: str) -> str:
        """``--fail-rate``, ``--http503-rate`` for faults; ``--delay-ms`` for the others."""
        if self.fault is not None:
            return f"--{name.replace('_', '')}-rate"
        return "--" + name.replace("_", "-")


def _setting(default: object, kind: Kind, *, help: str | None = None) -> Any:
    return field(default=default, metadata={_SETTING: Setting(kind, help)})


def _fault(outcome: Outcome) -> Any:
    setting = Setting(FRACTION, "fraction (0..1)", outcome)
    return field(default=0.0, metadata={_SETTING: setting})


@dataclass(frozen=True)
class Behaviour:
    """How the stub answers; each fault field is the fraction of requests (0..1) that get it.

    The fault fractions add up to at most 1; the rest are answered normally. `delay_ms` is added
    before the answer (faults included) to a `delay_rate` fraction of requests.
    """

    delay_ms: float = _setting(0.0, NON_NEGATIVE, help="added before each answer")
    delay_rate: float = _setting(1.0, FRACTION, help="fraction delayed")
    fail: float = _fault(Outcome.FAIL)
    timeout: float = _fault(Outcome.TIMEOUT)
    http_429: float = _fault(Outcome.HTTP_429)
    http_503: float = _fault(Outcome.HTTP_503)
    http_500: float = _fault(Outcome.HTTP_500)
    garbage: float = _fault(Outcome.GARBAGE)
    huge: float = _fault(Outcome.HUGE)
    close: float = _fault(Outcome.CLOSE)
    hang_seconds: float = _setting(DEFAULT_HANG_SECONDS, POSITIVE)
    huge_bytes: int = _setting(DEFAULT_HUGE_BYTES, POSITIVE_INT)
    error: str = _setting(DEFAULT_ERROR, TEXT, help="the error of a failed dial")

    def __post_init__(self) -> None:
        for name, setting in SETTINGS.items():
            value = getattr(self, name)
            if not setting.kind.accepts(value):
                raise ValueError(f"{name} must be {setting.kind.requirement}, got {value!r}")
        total = sum(rate for _, rate in self.fault_rates())
        if total > 1.0 + _RATE_SUM_SLACK:
            raise ValueError(f"the fault fractions add up to {total:g}, more than 1")

    def fault_rates(self) -> tuple[tuple[Outcome, float], ...]:
        return tuple((outcome, getattr(self, name)) for outcome, name in FAULTS.items())

    def plan(self, sequence_number: int) -> tuple[float, Outcome]:
        """The delay (seconds) and outcome for the `sequence_number`-th request (from 1)."""
        delay_point = (sequence_number * _DELAY_STEP) % 1.0
        delay = self.delay_ms / 1000.0 if delay_point < self.delay_rate else 0.0
        fault_point = (sequence_number * _FAULT_STEP) % 1.0
        edge = 0.0
        for outcome, rate in self.fault_rates():
            edge += rate
            if rate > 0.0 and fault_point < edge:
                return delay, outcome
        return delay, Outcome.OK

    def to_json(self) -> dict[str, object]:
        return {camel(name): getattr(self, name) for name in SETTINGS}

    @classmethod
    def from_json(cls, data: Mapping[str, object], base: Behaviour | None = None) -> Behaviour:
        """A behaviour from camelCase JSON (`delayMs`, `http503`, ...); missing keys keep `base`."""
        names = {camel(name): name for name in SETTINGS}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown behaviour keys {unknown}; known: {sorted(names)}")
        changes: dict[str, Any] = {names[key]: value for key, value in data.items()}
        return replace(base or cls(), **changes)


SETTINGS: Final[Mapping[str, Setting]] = {f.name: f.metadata[_SETTING] for f in fields(Behaviour)}
"""Every `Behaviour` field's `Setting`, by field name, in declaration order."""
FAULTS: Final[Mapping[Outcome, str]] = {
    setting.fault: name for name, setting in SETTINGS.items() if setting.fault is not None
}
"""The fault fields by the outcome they cause, in the order `Behaviour.plan` tries them."""
