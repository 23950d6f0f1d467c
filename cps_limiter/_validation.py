"""Argument checks shared by strategies and limiters; each error names what is wrong."""

from __future__ import annotations

import math
import re

from ._errors import ConfigurationError

MAX_SCOPE_LENGTH = 200
# Whitespace, control characters and braces: braces would let a scope pick its own cluster
# hash slot, the rest make keys unreadable in redis-cli and logs.
_FORBIDDEN_IN_NAMES = re.compile(r"[\s\x00-\x1f\x7f{}]")


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {value}")
    return value


def non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ConfigurationError(f"{name} must be >= 0, got {value}")
    return value


def positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def non_negative_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def key_part(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{name} must not be empty")
    if len(value) > MAX_SCOPE_LENGTH:
        raise ConfigurationError(
            f"{name} must be at most {MAX_SCOPE_LENGTH} characters, got {len(value)}"
        )
    if _FORBIDDEN_IN_NAMES.search(value):
        raise ConfigurationError(
            f"{name} must not hold whitespace, control characters or braces: {value[:40]!r}"
        )
    return value
