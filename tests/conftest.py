"""Fixtures shared by the suite: a redis-server of the session's own, and limiters on it."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

import cps_limiter
from cps_limiter import AsyncLimiter, FixedWindow, Limiter, SlidingWindow, Strategy, TokenBucket
from loadtest.servers import RedisServer
from tests.support.report import reported_lines

STRATEGIES: dict[str, Callable[[int], Strategy]] = {
    "fixed": lambda limit: FixedWindow(limit),
    "sliding": lambda limit: SlidingWindow(limit),
    "token": lambda limit: TokenBucket(rate=limit),
}
LONG = 3600
"""A window far longer than a test: nothing refills or rolls over between its calls."""
LASTING: dict[str, Callable[[int], Strategy]] = {
    "fixed": lambda limit: FixedWindow(limit, window=LONG),
    "sliding": lambda limit: SlidingWindow(limit, window=LONG),
    "token": lambda limit: TokenBucket(rate=limit, period=LONG),
}
"""`STRATEGIES` for tests that count: whatever the clock does during the test, the count only
changes by the test's own calls."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server started for this test session on a free port."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=sorted(STRATEGIES))
def strategy_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class SyncFacade:
    """An AsyncLimiter or Limiter seen through one synchronous interface, so that one test
    covers both."""

    def __init__(self, limiter: Limiter | AsyncLimiter, runner: Any) -> None:
        self.limiter = limiter
        self._runner = runner

    def _run(self, value: Any) -> Any:
        return self._runner.run(value) if self._runner is not None else value

    def acquire(self, *args: Any, **kwargs: Any) -> cps_limiter.Decision:
        result: cps_limiter.Decision = self._run(self.limiter.acquire(*args, **kwargs))
        return result

    def acquire_all(self, *args: Any, **kwargs: Any) -> cps_limiter.RulesDecision:
        result: cps_limiter.RulesDecision = self._run(self.limiter.acquire_all(*args, **kwargs))
        return result

    def release(self, scope: str | None, *lease_ids: str) -> int:
        released: int = self._run(self.limiter.release(scope, *lease_ids))
        return released

    def leases_held(self, scope: str | None = None) -> tuple[int, float]:
        held: tuple[int, float] = self._run(self.limiter.leases_held(scope))
        return held

    def peek(self, *args: Any) -> cps_limiter.Decision:
        result: cps_limiter.Decision = self._run(self.limiter.peek(*args))
        return result

    def reset(self, *args: Any) -> None:
        self._run(self.limiter.reset(*args))

    def run(self, operation: Callable[[Any], Any]) -> Any:
        return self._run(self.limiter.run(operation))

    def set_cap(self, limit: int, ttl: float) -> None:
        self._run(self.limiter.set_cap(limit, ttl))

    def command(self, *args: Any) -> Any:
        """A raw Redis command on the limiter's own client (``GET``, ``PTTL``, ...)."""
        return self._run(self.limiter.client.execute_command(*args))

    def server_time(self) -> float:
        """The clock of the limiter's Redis, in seconds."""
        seconds, micros = self._run(self.limiter.client.time())
        return float(seconds) + float(micros) / 1e6


PATIENT = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
"""Client timeouts of seconds, not the limiter's fail-fast 0.1 s, for ``make(...,
patient=True)``: a test of what Redis decides must not see a busy machine's slow answer fail
open."""
PATIENT_DECISION_TIMEOUT = 5.0


@contextlib.contextmanager
def _limiters(kind: str, prefix: str) -> Iterator[Callable[..., SyncFacade]]:
    """``make(url, strategy, patient=False, **options)``: limiters of ``kind`` (sync or async)
    on any URL, seen through one interface, closed at the end."""
    import asyncio

    runner = asyncio.Runner() if kind == "async" else None
    made: list[Limiter | AsyncLimiter] = []

    def make(url: str, strategy: Strategy, *, patient: bool = False, **options: Any) -> SyncFacade:
        options.setdefault("prefix", prefix)
        if patient:
            options.update(PATIENT)
            if runner is not None:
                options["decision_timeout"] = PATIENT_DECISION_TIMEOUT
        if runner is None:
            limiter: Limiter | AsyncLimiter = Limiter.from_url(url, strategy, **options)
        else:
            limiter = runner.run(_async_from_url(url, strategy, options))
        made.append(limiter)
        return SyncFacade(limiter, runner)

    try:
        yield make
    finally:
        for limiter in made:
            if isinstance(limiter, AsyncLimiter):
                assert runner is not None
                runner.run(limiter.aclose())
            else:
                limiter.close()
        if runner is not None:
            runner.close()


@pytest.fixture(params=["sync", "async"])
def make_limiter(
    request: pytest.FixtureRequest, backend_url: str, prefix: str
) -> Iterator[Callable[..., SyncFacade]]:
    """Build limiters on the test's backend, sync or async, seen through one interface."""
    with _limiters(request.param, prefix) as make:
        yield functools.partial(make, backend_url)


@pytest.fixture(params=["sync", "async"])
def make_limiter_on(
    request: pytest.FixtureRequest, prefix: str
) -> Iterator[Callable[..., SyncFacade]]:
    """``make_limiter_on(url, strategy, **options)``: as `make_limiter`, on a URL of the test's
    choosing (a dead port, a stalled listener, a server the test kills)."""
    with _limiters(request.param, prefix) as make:
        yield make


async def _async_from_url(url: str, strategy: Strategy, options: dict[str, Any]) -> AsyncLimiter:
    return AsyncLimiter.from_url(url, strategy, **options)


@pytest.fixture
async def async_redis(redis_server: RedisServer) -> AsyncIterator[Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=redis_server.port)
    yield client
    await client.aclose()


SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "raw_redis",
        "async_redis",
        "local_cluster",
        "real_redis",
        "own_redis",
    }
)
"""Fixtures that start a redis-server (or a cluster of them): tests that use one, directly or
through another fixture, are left out of the fast lane."""
SERVER_FOLDERS = frozenset({"reliability", "tooling", "image"})
"""Folders whose tests start servers, subprocesses or builds of their own."""
SERVER_MODULES = frozenset(
    {"test_simulate", "test_runtime_client", "test_limiter_cli", "test_dialer_config"}
)
"""Modules whose tests run the harness or the package in processes of their own."""
SERVER_PARAMS = frozenset({"redis", "stalled", "dead"})
"""Parameters that pick a real server (or a listener standing in for a broken one)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a server or a process: ``make test-fast`` runs the rest."""
    for item in items:
        path = item.path
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        needs_server = (
            params.get("backend_url") == "redis"
            or any(str(value) in SERVER_PARAMS for value in params.values())
            or bool(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
            or path.parent.name in SERVER_FOLDERS
            or path.stem in SERVER_MODULES
            or "redis" in item.keywords
        )
        if needs_server:
            item.add_marker(pytest.mark.server)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = reported_lines(config)
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
