"""The lean common path: a grant in one INCRBY with its expiry set once, a short reply, the
EVALSHA sent on a pooled connection directly, and tracing that builds nothing unsampled."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from cps_limiter import AdaptivePolicy, Decision, FixedWindow, Limiter, _telemetry, _wire
from cps_limiter._scripts import parse_reply
from loadtest.servers import RedisServer
from tests.conftest import LASTING, LONG, SyncFacade

MakeLimiter = Callable[..., SyncFacade]


def counters(limiter: SyncFacade, prefix: str) -> list[str]:
    keys = limiter.command("KEYS", f"{prefix}:*")
    return sorted(k.decode() if isinstance(k, bytes) else k for k in keys)


@pytest.mark.parametrize("adaptive", [None, AdaptivePolicy()])
def test_a_counter_gets_its_expiry_when_created_and_later_grants_keep_it(
    make_limiter: MakeLimiter, prefix: str, adaptive: AdaptivePolicy | None
) -> None:
    limiter = make_limiter(FixedWindow(100, window=LONG), adaptive=adaptive, patient=True)
    assert limiter.acquire().allowed
    (counter,) = counters(limiter, prefix)
    # It outlives its window by one window: between one and two windows from now.
    assert LONG * 1000 < limiter.command("PTTL", counter) <= 2 * LONG * 1000
    marker = 3 * LONG * 1000
    limiter.command("PEXPIRE", counter, marker)
    assert limiter.acquire(permits=5).allowed
    assert limiter.command("PTTL", counter) > 2 * LONG * 1000


def test_a_request_that_does_not_fit_leaves_the_counter_as_it_was(
    make_limiter: MakeLimiter, prefix: str
) -> None:
    limiter = make_limiter(FixedWindow(5, window=LONG), deny_cache=False, patient=True)
    assert limiter.acquire(permits=2).allowed
    (counter,) = counters(limiter, prefix)
    denied = limiter.acquire(permits=4)
    assert (denied.allowed, denied.granted, denied.remaining) == (False, 0, 3)
    assert 0 < denied.retry_after <= LONG
    assert int(limiter.command("GET", counter)) == 2


def test_a_partial_request_takes_what_is_free_in_one_step(
    make_limiter: MakeLimiter, prefix: str
) -> None:
    limiter = make_limiter(FixedWindow(5, window=LONG), patient=True)
    assert limiter.acquire(permits=2).allowed
    decision = limiter.acquire(permits=4, partial=True)
    assert (decision.allowed, decision.granted, decision.remaining) == (True, 3, 0)
    (counter,) = counters(limiter, prefix)
    assert int(limiter.command("GET", counter)) == 5


@pytest.mark.parametrize("name", sorted(LASTING))
def test_the_lean_grant_gives_the_decision_the_full_path_gives(
    make_limiter: MakeLimiter, name: str
) -> None:
    """Without a policy the common path answers the short reply; with one (no report, no cap)
    the same grant takes the adaptive reads: the decisions agree."""
    lean = make_limiter(LASTING[name](10), patient=True, prefix=f"lean{name}")
    full = make_limiter(LASTING[name](10), patient=True, adaptive=AdaptivePolicy())
    full.reset()
    lean.reset()
    got = [(lean.acquire(permits=3), full.acquire(permits=3)) for _ in range(2)]
    for mine, theirs in got:
        assert (mine.allowed, mine.granted, mine.limit, mine.remaining, mine.retry_after) == (
            theirs.allowed,
            theirs.granted,
            theirs.limit,
            theirs.remaining,
            theirs.retry_after,
        )
        assert mine.reset_after == pytest.approx(theirs.reset_after, abs=5.0)
        assert 0 < mine.reset_after <= LONG


def test_the_short_reply_parses_as_the_full_reply_of_the_same_grant() -> None:
    short = parse_reply([3, 10, 7, 1_500_000])
    full = parse_reply([b"1", b"3", b"10", b"7", b"0", b"1.5", b"0"])
    assert short == full == (Decision(True, 3, 10, 7, 0.0, 1.5), 0.0)


def test_a_plain_client_sends_on_its_pool_and_others_keep_the_plain_path(
    redis_url: str,
) -> None:
    import fakeredis

    client = redis.Redis.from_url(redis_url)
    assert _wire.direct_pool(client) is client.connection_pool
    assert _wire.direct_pool(fakeredis.FakeRedis()) is None
    assert _wire.direct_pool(redis.Redis.from_url(redis_url, single_connection_client=True)) is None


def test_a_direct_call_that_fails_disconnects_its_connection_before_giving_it_back(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.ping()
    pool = client.connection_pool

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a library bug while reading")

    monkeypatch.setattr(redis.connection.Connection, "read_response", broken)
    with pytest.raises(RuntimeError):
        _wire.evalsha(client, pool, ("0" * 40, 0), _wire.Spare(), "return 0")
    monkeypatch.undo()
    (connection,) = pool._available_connections
    assert connection._sock is None
    assert client.ping()


def _count_pool_takes(pool: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    taken: list[int] = []
    plain = pool.get_connection
    if inspect.iscoroutinefunction(plain):

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            taken.append(1)
            return await plain(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", counted_async)
    else:

        def counted(*args: Any, **kwargs: Any) -> Any:
            taken.append(1)
            return plain(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", counted)
    return taken


def test_decisions_one_after_another_reuse_the_kept_connection_without_the_pool(
    make_limiter_on: MakeLimiter, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_limiter_on(redis_url, FixedWindow(100, window=LONG))
    taken = _count_pool_takes(limiter.limiter.client.connection_pool, monkeypatch)
    assert all(limiter.acquire().allowed for _ in range(5))
    assert len(taken) == 1


def test_a_kept_connection_the_server_closed_costs_no_decision(
    make_limiter_on: MakeLimiter, redis_url: str
) -> None:
    """The kept connection skips the pool's check of the socket: a connection that died while
    kept fails its call, which the limiter sends again on a fresh one."""
    limiter = make_limiter_on(redis_url, FixedWindow(100, window=LONG), deny_cache=False)
    assert limiter.acquire().allowed
    admin = redis.Redis.from_url(redis_url)
    try:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        admin.close()
    decision = limiter.acquire()
    assert (decision.allowed, decision.fail_open, decision.remaining) == (True, False, 98)


def test_closing_a_limiter_gives_the_kept_connection_back_to_a_pool_it_does_not_own(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    pool = client.connection_pool
    limiter = Limiter(client, FixedWindow(5), prefix=prefix)
    assert limiter.acquire().allowed
    assert len(pool._in_use_connections) == 1
    limiter.close()
    assert len(pool._in_use_connections) == 0
    assert client.ping()
    client.close()


def test_threads_deciding_and_sending_other_commands_at_once_give_every_connection_back(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    pool = client.connection_pool
    limiter = Limiter(client, FixedWindow(10**9, window=LONG), prefix=prefix)

    def work(turns: int) -> None:
        for turn in range(turns):
            assert limiter.acquire().allowed
            if turn % 3 == 0:
                assert limiter.run(lambda redis_client: redis_client.ping())

    with ThreadPoolExecutor(8) as threads:
        for done in [threads.submit(work, 150) for _ in range(8)]:
            done.result()
    limiter.close()
    assert len(pool._in_use_connections) == 0
    client.close()


def test_a_forked_child_never_uses_its_parents_kept_connection(redis_url: str, prefix: str) -> None:
    limiter = Limiter.from_url(redis_url, FixedWindow(100, window=LONG), prefix=prefix)
    try:
        assert limiter.acquire().allowed
        ((_, kept),) = limiter._backend.spare._kept
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            fresh = limiter._backend.spare._kept == [] and limiter.acquire().remaining == 98
            os._exit(0 if fresh and kept._sock is not None else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert limiter.acquire().remaining == 97
        assert limiter._backend.spare._kept[0][1] is kept
    finally:
        limiter.close()


def test_an_instrumented_client_keeps_its_command_layer(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain: Any = redis.Redis.execute_command
    seen: list[str] = []

    def traced(self: redis.Redis, *args: Any, **options: Any) -> Any:
        seen.append(str(args[0]))
        return plain(self, *args, **options)

    traced.__wrapped__ = plain  # type: ignore[attr-defined]
    monkeypatch.setattr(redis.Redis, "execute_command", traced)
    with Limiter.from_url(redis_url, FixedWindow(5), prefix=prefix) as limiter:
        seen.clear()
        assert limiter.acquire().allowed
    assert seen == ["EVALSHA"]


def test_an_unsampled_decision_builds_no_span_attributes(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    monkeypatch.setattr(_telemetry, "_tracer", tracer)
    built: list[Any] = []
    monkeypatch.setattr(trace.NonRecordingSpan, "set_attributes", built.append)
    monkeypatch.setattr(trace.NonRecordingSpan, "set_attribute", built.append)
    with Limiter.from_url(redis_url, FixedWindow(5), prefix=prefix) as limiter:
        assert limiter.acquire().allowed
    assert built == []


@pytest.mark.parametrize("adaptive", [None, AdaptivePolicy()])
def test_a_redis_out_of_memory_still_denies_a_request_over_the_limit(
    prefix: str, adaptive: AdaptivePolicy | None
) -> None:
    """Counting first is a write, which a Redis out of memory refuses: the script then decides
    from its reads, as it did before it counted first, rather than fail the decision open."""
    server = RedisServer().start()
    try:
        strategy = FixedWindow(1, window=LONG)
        options: dict[str, Any] = {"prefix": prefix, "deny_cache": False, "adaptive": adaptive}
        with Limiter.from_url(server.url, strategy, **options) as limiter:
            assert limiter.acquire().allowed
            admin = redis.Redis.from_url(server.url)
            # noeviction, Redis's default policy: every write is refused.
            used: Any = admin.info("memory")
            admin.config_set("maxmemory", used["used_memory"] // 2)
            denied = limiter.acquire()
            admin.close()
        assert (denied.allowed, denied.fail_open) == (False, False)
    finally:
        server.stop()
