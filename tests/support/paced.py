"""Reading a PacedWindow's pacer key: the next free moment on the Redis clock."""

from __future__ import annotations

US = 1_000_000
PACE_EPOCH = 1_767_225_600
"""The unix second the pacer key (``{prefix}:pace``) counts microseconds from: ``EPOCH`` in
cps_limiter/lua/paced_window.lua."""


def next_free(raw: bytes | str | None) -> int | None:
    """The pacer key's value as unix microseconds, or None when there is no key."""
    return None if raw is None else PACE_EPOCH * US + int(raw)
