"""The Lua scripts shipped in the package, and the reply they share."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

from ._decision import Decision

ACQUIRE = "acquire"
PEEK = "peek"
RESET = "reset"


GRANT_REPLY_LENGTH = 4
"""The fields of the short reply to a grant that needs no wait; the full reply has 7 or 8."""


@functools.cache
def lua_source(name: str) -> str:
    """The text of ``cps_limiter/lua/<name>``, read from the installed package."""
    return resources.files("cps_limiter").joinpath("lua", name).read_text(encoding="utf-8")


_CORE = "lib_core.lua"
_FULL = ("lib_request.lua", "adaptive.lua")
_WINDOWS = ("lib_windows.lua", "lib_paced.lua")
SOURCES = {
    "fixed_window.lua": (
        _CORE,
        "lib_grant.lua",
        "lib_counter.lua",
        "fixed_window_grant.lua",
        *_FULL,
        "lib_windows.lua",
        "fixed_window.lua",
    ),
    "paced_window.lua": (
        _CORE,
        "adaptive.lua",
        "lib_counter.lua",
        "lib_pacer.lua",
        "paced_window_grant.lua",
        "lib_request.lua",
        *_WINDOWS,
        "paced_window.lua",
    ),
    "sliding_window.lua": (
        _CORE,
        "lib_grant.lua",
        "lib_sliding.lua",
        "sliding_window_grant.lua",
        *_FULL,
        "sliding_window.lua",
    ),
    "token_bucket.lua": (
        _CORE,
        "lib_grant.lua",
        "lib_gcra.lua",
        "token_bucket_grant.lua",
        *_FULL,
        "token_bucket.lua",
    ),
    "rules.lua": (
        _CORE,
        *_FULL,
        "lib_pacer.lua",
        *_WINDOWS,
        "lib_gcra.lua",
        "lib_sliding.lua",
        "rules.lua",
    ),
}
"""What runs for each decision script, in order: the library's parts it counts with (each
algorithm is written once, in its part), the adaptive prelude, and the script. A strategy with
a grant block (its common request, answered at once) has it right after the few parts it uses:
every function a script defines is built again on each call, and the common request then builds
only those it calls."""


def strategy_source(name: str) -> str:
    """The source of decision script ``name``, its library parts and prelude put around it."""
    return "".join(lua_source(part) for part in SOURCES[name])


def parse_reply(reply: Sequence[bytes | str | int]) -> tuple[Decision, float]:
    """The Decision in a script's reply, and the seconds the caller must wait before using it.

    Every script answers ``{allowed, granted, limit, remaining, retry_after, reset_after, wait}``
    with the three durations as strings; the paced window adds the later permits' moments,
    microseconds after the first, space-separated. ``float`` and ``int`` take bytes and str
    alike, so the reply of a client with or without ``decode_responses`` parses without
    decoding first.

    A grant that needs no wait answers ``{granted, limit, remaining, reset_after}`` instead,
    with integers only (reset_after in microseconds): the common case formats no strings on
    the server and parses none here.
    """
    if len(reply) == GRANT_REPLY_LENGTH:
        granted, limit, remaining, reset_us = reply
        reset = int(reset_us) / 1_000_000
        return Decision(
            allowed=True,
            granted=int(granted),
            limit=int(limit),
            remaining=int(remaining),
            retry_after=0.0,
            reset_after=reset if reset > 0.0 else 0.0,
        ), 0.0
    allowed, granted, limit, remaining, retry_after, reset_after, wait, *paced = reply
    schedule = _schedule(paced[0]) if paced and paced[0] else ()
    retry = float(retry_after)
    reset = float(reset_after)
    decision = Decision(
        allowed=bool(int(allowed)),
        granted=int(granted),
        limit=int(limit),
        remaining=int(remaining),
        retry_after=retry if retry > 0.0 else 0.0,
        reset_after=reset if reset > 0.0 else 0.0,
        schedule=schedule,
    )
    waited = float(wait)
    return decision, waited if waited > 0.0 else 0.0


def _schedule(offsets: bytes | str | int) -> tuple[float, ...]:
    text = offsets.decode() if isinstance(offsets, bytes) else str(offsets)
    return (0.0, *(int(micros) / 1_000_000 for micros in text.split()))
