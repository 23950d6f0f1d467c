"""Killing a client's pooled Redis connections while Redis stays well: ``CLIENT KILL`` by the
connection's name, or a proxy in between that resets or silences the connections open now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import redis

from tests.support.proxy import BlackholeProxy

KILLS = ("client-kill", "reset", "silent")
KILL_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.01


def client_ids(raw_redis: redis.Redis, name: str) -> set[str]:
    entries = cast(list[dict[str, str]], raw_redis.client_list())
    return {entry["id"] for entry in entries if entry.get("name") == name}


def client_kill(raw_redis: redis.Redis, name: str) -> None:
    """``CLIENT KILL ID`` each connection named ``name``; return once Redis lists none."""
    ids = client_ids(raw_redis, name)
    assert ids, f"no Redis connection named {name} to kill"
    for client_id in ids:
        raw_redis.client_kill_filter(_id=client_id)
    deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
    while client_ids(raw_redis, name) & ids:
        assert time.monotonic() < deadline, f"Redis still lists {ids} after CLIENT KILL"
        time.sleep(POLL_SECONDS)  # polling Redis's own list, bounded by the deadline


def killer(
    kill: str, redis_url: str, proxy: BlackholeProxy, raw_redis: redis.Redis, name: str
) -> tuple[str, Callable[[], None]]:
    """The URL a client connects to for ``kill`` (its connections named ``name``), and what
    kills the connections it holds: straight to Redis for CLIENT KILL, through the proxy for
    a reset or silence."""
    if kill == "client-kill":
        return f"{redis_url}?client_name={name}", lambda: client_kill(raw_redis, name)

    def broke(count: int) -> None:
        assert count > 0, "the proxy held no connection to break"

    if kill == "reset":
        return proxy.url, lambda: broke(proxy.reset_existing())
    assert kill == "silent", kill
    return proxy.url, lambda: broke(proxy.silence_existing())
