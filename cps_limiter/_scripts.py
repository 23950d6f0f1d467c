"""The Lua scripts shipped in the package, and the reply they share."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

from ._decision import Decision

ACQUIRE = "acquire"
PEEK = "peek"
RESET = "reset"


LIBRARY_CORE = "lib_core.lua"
ADAPTIVE_PRELUDE = "adaptive.lua"
GRANT_REPLY_LENGTH = 4
"""The fields of the short reply to a grant that needs no wait; the full reply has 7 or 8."""


@functools.cache
def lua_source(name: str) -> str:
    """The text of ``cps_limiter/lua/<name>``, read from the installed package."""
    return resources.files("cps_limiter").joinpath("lua", name).read_text(encoding="utf-8")


LIBRARY_PARTS = {
    "fixed_window.lua": ("lib_windows.lua",),
    "paced_window.lua": ("lib_windows.lua",),
    "sliding_window.lua": ("lib_sliding.lua",),
    "token_bucket.lua": ("lib_gcra.lua",),
    "rules.lua": ("lib_windows.lua", "lib_gcra.lua", "lib_sliding.lua"),
}
"""The library's parts each decision script counts with: each algorithm is written once, in its
part. A script gets only the parts it uses, since every function a script defines is built
again on each call."""

GRANT_BLOCKS = {
    "fixed_window.lua": "fixed_window_grant.lua",
    "sliding_window.lua": "sliding_window_grant.lua",
    "token_bucket.lua": "token_bucket_grant.lua",
}
"""Strategies whose common request has a block of its own, run before the strategy's script
(in the same script): it answers a grant without the rest's work."""


def strategy_source(name: str) -> str:
    """What runs for a strategy: the library's core, the adaptive prelude, the library's parts
    the script counts with, the strategy's grant block if it has one, then the script itself."""
    block = GRANT_BLOCKS.get(name)
    parts = (LIBRARY_CORE, ADAPTIVE_PRELUDE, *LIBRARY_PARTS.get(name, ()))
    grant = "" if block is None else lua_source(block)
    return "".join(lua_source(part) for part in parts) + grant + lua_source(name)


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
