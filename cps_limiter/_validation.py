"""Argument checks shared by strategies and limiters; each error names what is wrong."""

from __future__ import annotations

import math

from ._errors import ConfigurationError

MAX_SCOPE_LENGTH = 200


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


def fraction(name: str, value: object) -> float:
    """A number in [0, 1)."""
    number = non_negative_number(name, value)
    if number >= 1:
        raise ConfigurationError(f"{name} must be below 1, got {value}")
    return number


def key_part(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{name} must not be empty")
    if len(value) > MAX_SCOPE_LENGTH:
        raise ConfigurationError(
            f"{name} must be at most {MAX_SCOPE_LENGTH} characters, got {len(value)}"
        )
    # Braces would let a name pick its own cluster hash slot; whitespace and control or format
    # characters (Unicode's, not only ASCII's: isprintable() is false for all of them but the
    # space) make keys unreadable in redis-cli and logs.
    if not value.isprintable() or " " in value or "{" in value or "}" in value:
        raise ConfigurationError(
            f"{name} must not hold whitespace, control characters or braces: {value[:40]!r}"
        )
    return value
