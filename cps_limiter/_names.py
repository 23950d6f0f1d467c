"""Strategies by name, for settings that name one (``CPS_STRATEGY``, the operator's command).

One table, so that every caller that says "token" means the same limiter on the same keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ._errors import ConfigurationError
from ._strategies import FixedWindow, PacedWindow, SlidingWindow, Strategy, TokenBucket
from ._validation import positive_int

PACING_HEADROOM = 0.03
"""The paced window's headroom when chosen by name: its moments are exact on the Redis clock,
and the 3% absorbs the jitter between a moment and a call reaching the carrier (a hop, a busy
host) so that no second at the carrier holds more than the limit; see docs/pacing.md."""

_BY_NAME: Mapping[str, Callable[[int], Strategy]] = MappingProxyType(
    {
        "paced": lambda limit: PacedWindow(limit, headroom=PACING_HEADROOM),
        "fixed": lambda limit: FixedWindow(limit),
        "sliding": lambda limit: SlidingWindow(limit),
        # A burst of 1 spaces calls 1/limit apart, so that no one-second interval holds more
        # than the limit: carriers count any second, and a larger burst would let
        # burst + limit - 1 through in one.
        "token": lambda limit: TokenBucket(rate=limit, burst=1),
    }
)

STRATEGY_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""The names `strategy_from_name` knows, in the order settings list them."""


def strategy_from_name(name: str, limit: int) -> Strategy:
    """The strategy called ``name`` at ``limit`` permits per second."""
    make = _BY_NAME.get(name) if isinstance(name, str) else None
    if make is None:
        raise ConfigurationError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}"
        )
    return make(positive_int("limit", limit))
