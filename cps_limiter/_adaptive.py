"""Adaptive CPS: the limit in force from a base limit, an operator's cap, the carrier's refusals
(AIMD) and a health report.

The policy is a value; the limit in force is computed inside each decision's script
(``lua/adaptive.lua``) from one hash beside the limit's own keys, ``<base>:adaptive``, which
holds the cap, the AIMD state and the health report. The functions here write and read it for
operators, on sync and asyncio clients alike: the writes send one command and return what the
client returns (an awaitable on an asyncio client), and the reads have an ``_async`` twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigurationError
from ._scripts import lua_source
from ._validation import non_negative_number, positive_int, positive_number

DEFAULT_HIGH_CPU = 80.0
DEFAULT_HIGH_CPU_FACTOR = 0.5
DEFAULT_CRITICAL_CPU = 90.0
DEFAULT_CRITICAL_CPU_FACTOR = 0.25
DEFAULT_ANSWER_RATE_FLOOR = 0.3
DEFAULT_LOW_ANSWER_FACTOR = 0.5
DEFAULT_MAX_AGE = 30.0
"""Seconds after which a health report is stale and ignored."""
DEFAULT_REFUSAL_FACTOR = 0.85
"""On the carrier's refusals the limit falls to this share of itself (at most once a hold)."""
DEFAULT_REFUSAL_HOLD = 2.5
"""Seconds after a decrease during which refusals are forgiven: a refusal arrives as late as the
furthest moment a caller books ahead (the dialer's RATE_LIMIT_MAX_WAIT_SECONDS, 2 s) plus the
dial and the report, so those answer calls granted at the old limit, and counting them would
cut it twice for one excess."""
MIN_REFUSAL_HOLD = 1.0
"""A decrease comes at most once a second, whatever the hold."""
DEFAULT_AIMD_STEP = 0.02
"""Each second without a refusal the limit rises by this share of the base limit."""
DEFAULT_AIMD_FLOOR = 0.1
"""The share of the base limit that refusals never take the limit below."""
REFUSED_FIELD = "refused"
"""The adaptive hash's field that the worker adds the carrier's refusals to (HINCRBY)."""

OFF_ARGUMENTS: list[str] = []
"""The trailing ARGV of a limiter without a policy: none. The last ARGV is then the request's
deadline, never "1", so lua/adaptive.lua reads nothing (and Redis copies one argument less)."""


def _fraction(name: str, value: object) -> float:
    number = non_negative_number(name, value)
    if number > 1:
        raise ConfigurationError(f"{name} must be between 0 and 1, got {value}")
    return number


def _percent(name: str, value: object) -> float:
    number = non_negative_number(name, value)
    if number > 100:
        raise ConfigurationError(f"{name} must be a percentage between 0 and 100, got {value}")
    return number


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    """How health cuts the pace: the seed's tiers (over 80% CPU half the limit, over 90% a
    quarter), and an answer rate below its floor cutting it again. A report older than
    ``max_age`` seconds is ignored. The carrier's refusals lower the limit to
    ``refusal_factor`` of itself at most once a ``refusal_hold`` (refusals reported within it are
    forgiven), never below ``aimd_floor`` of the base limit; from the hold's end it rises by
    ``aimd_step`` of the base limit each second without one, back to it."""

    high_cpu: float = DEFAULT_HIGH_CPU
    high_cpu_factor: float = DEFAULT_HIGH_CPU_FACTOR
    critical_cpu: float = DEFAULT_CRITICAL_CPU
    critical_cpu_factor: float = DEFAULT_CRITICAL_CPU_FACTOR
    answer_rate_floor: float = DEFAULT_ANSWER_RATE_FLOOR
    low_answer_factor: float = DEFAULT_LOW_ANSWER_FACTOR
    max_age: float = DEFAULT_MAX_AGE
    refusal_factor: float = DEFAULT_REFUSAL_FACTOR
    refusal_hold: float = DEFAULT_REFUSAL_HOLD
    aimd_step: float = DEFAULT_AIMD_STEP
    aimd_floor: float = DEFAULT_AIMD_FLOOR

    def __post_init__(self) -> None:
        _percent("high_cpu", self.high_cpu)
        _percent("critical_cpu", self.critical_cpu)
        if self.critical_cpu < self.high_cpu:
            raise ConfigurationError(
                f"critical_cpu ({self.critical_cpu}) must be >= high_cpu ({self.high_cpu})"
            )
        for name in ("high_cpu_factor", "critical_cpu_factor", "low_answer_factor"):
            _fraction(name, getattr(self, name))
        _fraction("answer_rate_floor", self.answer_rate_floor)
        positive_number("max_age", self.max_age)
        if not positive_number("refusal_hold", self.refusal_hold) >= MIN_REFUSAL_HOLD:
            raise ConfigurationError(
                f"refusal_hold must be at least {MIN_REFUSAL_HOLD} s, got {self.refusal_hold}"
            )
        for name in ("refusal_factor", "aimd_step", "aimd_floor"):
            if _fraction(name, getattr(self, name)) <= 0:
                raise ConfigurationError(f"{name} must be more than 0")

    def arguments(self) -> list[str]:
        """The trailing ARGV that lua/adaptive.lua reads."""
        return [
            str(math.ceil(self.refusal_hold * 1000)),
            repr(float(self.refusal_factor)),
            repr(float(self.aimd_step)),
            repr(float(self.aimd_floor)),
            repr(float(self.high_cpu)),
            repr(float(self.high_cpu_factor)),
            repr(float(self.critical_cpu)),
            repr(float(self.critical_cpu_factor)),
            repr(float(self.answer_rate_floor)),
            repr(float(self.low_answer_factor)),
            repr(float(self.max_age)),
            "1",
        ]

    def tier(self, cpu: float | None) -> str:
        """The name of the CPU tier: normal, high or critical."""
        if cpu is not None and cpu > self.critical_cpu:
            return "critical"
        if cpu is not None and cpu > self.high_cpu:
            return "high"
        return "normal"


HEALTH_TTL = 86400
"""Seconds a health report is kept: long after it is stale it is useless."""
_HEALTH_FIELDS = ("cpu", "answer_rate", "at")
_CAP_FIELDS = ("cap", "cap_until")
_AIMD_FIELDS = (REFUSED_FIELD, "aimd", "aimd_at")
WRITE_SCRIPT = "adaptive_write.lua"


def adaptive_key(base: str) -> str:
    """The hash of the cap and the health report: one key, so that a decision reads both at
    once."""
    return f"{base}:adaptive"


@dataclass(frozen=True, slots=True)
class HealthReport:
    cpu: float | None
    answer_rate: float | None
    age: float | None
    """Seconds since the report was written, on the Redis clock."""


def health_fields(cpu: float, answer_rate: float | None) -> tuple[str, str]:
    """The report's fields as the write script takes them, checked ("" for no answer rate);
    the time is stamped when it is written."""
    return (
        repr(float(_percent("cpu", cpu))),
        "" if answer_rate is None else repr(float(_fraction("answer_rate", answer_rate))),
    )


def cap_arguments(limit: int, ttl: float) -> tuple[str, int]:
    """The cap's value and its life in milliseconds, checked."""
    positive_int("limit", limit)
    return str(limit), math.ceil(positive_number("ttl", ttl) * 1000)


def _milliseconds(server_time: Any) -> float:
    seconds, micros = server_time
    return float(seconds) * 1000 + float(micros) / 1000


def _write(client: Any, base: str, *arguments: str | int) -> Any:
    # EVAL, not EVALSHA: an operator's rare write need not manage the script cache.
    return client.eval(lua_source(WRITE_SCRIPT), 1, adaptive_key(base), *arguments)


def set_cap(client: Any, base: str, value: str, milliseconds: int) -> Any:
    """Replace the base limit with ``value`` for ``milliseconds`` (see `cap_arguments`)."""
    return _write(client, base, "cap", value, milliseconds)


def clear_cap(client: Any, base: str) -> Any:
    return _write(client, base, "clear_cap")


def write_health(client: Any, base: str, fields: tuple[str, str]) -> Any:
    """Replace the report with ``fields`` (see `health_fields`), stamped with the Redis clock."""
    return _write(client, base, "health", *fields, HEALTH_TTL * 1000)


def _health(values: Any, server_time: Any) -> HealthReport:
    cpu, answer_rate, at = values
    return HealthReport(
        cpu=None if cpu is None else float(cpu),
        answer_rate=None if answer_rate is None else float(answer_rate),
        age=None if at is None else max(_milliseconds(server_time) / 1000 - float(at), 0.0),
    )


def _cap(values: Any, server_time: Any) -> tuple[int | None, float | None]:
    value, until = values
    if value is None or until is None:
        return None, None
    left = (float(until) - _milliseconds(server_time)) / 1000
    return (int(value), left) if left > 0 else (None, None)


@dataclass(frozen=True, slots=True)
class AimdState:
    refused: int
    """Refusals reported and not yet acted on."""
    limit: float | None
    """The AIMD limit set by the last decrease, before its rises since (None: none in force)."""
    since_decrease: float | None
    """Seconds since that decrease, on the Redis clock."""


def refused_count(refused: int) -> int:
    """``refused`` checked, before anything is sent."""
    return positive_int("refused", refused)


def refused_command(base: str, refused: int) -> tuple[str, str, str, int]:
    """The worker's one-line command, for a caller's own pipeline (see `refused_count`)."""
    return ("HINCRBY", adaptive_key(base), REFUSED_FIELD, refused)


def report_refused(client: Any, base: str, refused: int) -> Any:
    """Add ``refused`` calls (see `refused_count`) to the pending refusals: the worker's
    one-line command."""
    return client.hincrby(adaptive_key(base), REFUSED_FIELD, refused)


def _aimd(values: Any, server_time: Any) -> AimdState:
    refused, limit, at = values
    return AimdState(
        refused=int(refused or 0),
        limit=None if limit is None else float(limit),
        since_decrease=None
        if at is None
        else max((_milliseconds(server_time) - float(at)) / 1000, 0.0),
    )


def read_aimd(client: Any, base: str) -> AimdState:
    return _aimd(client.hmget(adaptive_key(base), _AIMD_FIELDS), client.time())


async def read_aimd_async(client: Any, base: str) -> AimdState:
    return _aimd(await client.hmget(adaptive_key(base), _AIMD_FIELDS), await client.time())


def read_health(client: Any, base: str) -> HealthReport:
    values = client.hmget(adaptive_key(base), _HEALTH_FIELDS)
    return _health(values, client.time())


async def read_health_async(client: Any, base: str) -> HealthReport:
    values = await client.hmget(adaptive_key(base), _HEALTH_FIELDS)
    return _health(values, await client.time())


def read_cap(client: Any, base: str) -> tuple[int | None, float | None]:
    """The cap in force and the seconds it has left, or (None, None)."""
    return _cap(client.hmget(adaptive_key(base), _CAP_FIELDS), client.time())


async def read_cap_async(client: Any, base: str) -> tuple[int | None, float | None]:
    return _cap(await client.hmget(adaptive_key(base), _CAP_FIELDS), await client.time())
