"""from_url for every scheme, and clients the caller brings."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import redis

from cps_limiter import AsyncLimiter, FixedWindow, Limiter
from loadtest.servers import RedisServer

HOUR = 3600
"""The window of tests that count: it does not roll over between their calls."""


def test_unix_socket_url_reaches_redis() -> None:
    path = Path(tempfile.mkdtemp(prefix="redis-sock-")) / "redis.sock"
    server = RedisServer(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"])
    server.start()
    try:
        with Limiter.from_url(f"unix://{path}", FixedWindow(2, window=HOUR)) as limiter:
            decisions = [limiter.acquire() for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert not any(d.fail_open for d in decisions)
    finally:
        server.cleanup()


def test_memory_urls_with_one_name_share_one_server() -> None:
    first = Limiter.from_url("memory://shared-name", FixedWindow(2, window=HOUR))
    second = Limiter.from_url("memory://shared-name", FixedWindow(2, window=HOUR))
    other = Limiter.from_url("memory://other-name", FixedWindow(2, window=HOUR))
    assert first.acquire(permits=2).allowed
    assert not second.acquire().allowed
    assert other.acquire(permits=2).allowed


async def test_memory_is_shared_by_sync_and_async_limiters() -> None:
    sync = Limiter.from_url("memory://both-kinds", FixedWindow(2, window=HOUR))
    asyn = AsyncLimiter.from_url("memory://both-kinds", FixedWindow(2, window=HOUR))
    assert sync.acquire(permits=2).allowed
    assert not (await asyn.acquire()).allowed


def test_a_client_the_caller_brings_is_used_and_left_open(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with Limiter(client, FixedWindow(1), prefix=prefix) as limiter:
        assert limiter.client is client
        assert limiter.acquire().allowed
    assert client.ping()
    client.close()


def test_a_client_with_decoded_responses_works(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter = Limiter(client, FixedWindow(5), prefix=prefix)
    decision = limiter.acquire(permits=2)
    assert (decision.allowed, decision.remaining) == (True, 3)


def test_limiter_options_and_client_options_are_told_apart(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(
        redis_url, FixedWindow(1), prefix=prefix, fail_mode="closed", max_connections=3
    )
    assert limiter.fail_mode == "closed"
    assert limiter.client.connection_pool.max_connections == 3


def test_an_unknown_client_option_fails_clearly(redis_url: str) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        Limiter.from_url(redis_url, FixedWindow(1), no_such_option=1).acquire()


async def test_the_async_from_url_sends_nothing_so_it_never_blocks_its_loop(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocking(*args: object, **kwargs: object) -> None:
        raise AssertionError("a blocking call to Redis inside a coroutine")

    with monkeypatch.context() as patched:
        patched.setattr(socket, "create_connection", blocking)
        patched.setattr(socket.socket, "connect", blocking)
        patched.setattr(redis.Redis, "execute_command", blocking)
        limiter = AsyncLimiter.from_url(redis_url, FixedWindow(1), prefix=prefix)
    assert (await limiter.acquire()).allowed
    await limiter.aclose()
