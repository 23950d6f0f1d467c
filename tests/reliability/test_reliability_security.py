"""Redis with an ACL user and a password, and with TLS (a CA and certificate made here), for the
limiter and the dialer; a wrong password fails at start, a revoked one fails open at run time,
and the password shows in no log line and no exception."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from cps_limiter import AsyncLimiter, ConfigurationError, Decision, Limiter
from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, dialer_for, make_batch
from tests.support.faults import DECISION_BOUND, RECOVERY_BOUND
from tests.support.load import LIMIT, async_hammer, burst, hammer, strategy
from tests.support.logs import captured
from tests.support.tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.usefixtures("no_limiter_spans")

USER = "dialer"
PASSWORD = "p@ss:w/rd#1-Zq9"
"""Characters that must be percent-encoded in a URL, so that quoting is exercised too."""
ADMIN_PASSWORD = "admin-Kx7"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), ADMIN_PASSWORD)
POLL_SECONDS = 0.01


def acl_args(password: str = PASSWORD) -> list[str]:
    """A least-privilege user for the limiter and the dialer, an admin, and no default user."""
    return [
        "--user", USER, "on", f">{password}", "~*", "&*",
        "+@read", "+@write", "+@scripting", "+@connection", "+time", "-@dangerous",
        "--user", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all",
        "--user", "default", "off",
    ]  # fmt: skip


def url_of(server: RedisServer, password: str = PASSWORD, *, ca: Path | None = None) -> str:
    scheme = "redis" if server.tls is None else "rediss"
    query = "" if ca is None else f"?ssl_ca_certs={ca}"
    return f"{scheme}://{USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/0{query}"


def admin(server: RedisServer) -> redis.Redis:
    tls = {} if server.tls is None else {"ssl": True, "ssl_ca_certs": str(server.tls.ca_cert)}
    return redis.Redis(
        port=server.port,
        username="admin",
        password=ADMIN_PASSWORD,
        **tls,  # type: ignore[arg-type]
    )


def leaked(texts: list[str]) -> list[str]:
    return [text for text in texts if any(secret in text for secret in SECRETS)]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=acl_args()).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def tls_server(tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(extra_args=acl_args(), tls=tls_files).start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


# -- it works -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fixed", "sliding", "token"])
def test_the_limiter_is_exact_as_an_acl_user_with_a_password(
    acl_server: RedisServer, prefix: str, name: str
) -> None:
    with Limiter.from_url(url_of(acl_server), strategy(name, LIMIT), prefix=prefix) as limiter:
        decisions = hammer(lambda: limiter.acquire())
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


def test_the_limiter_is_exact_over_tls_with_the_ca_named_in_the_url(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server, ca=tls_files.ca_cert)
    with Limiter.from_url(url, strategy("fixed", LIMIT), prefix=prefix) as limiter:
        decisions = hammer(lambda: limiter.acquire())
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


def test_the_ca_may_be_given_as_an_option_instead(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server)
    with Limiter.from_url(
        url, strategy("fixed", LIMIT), prefix=prefix, ssl_ca_certs=str(tls_files.ca_cert)
    ) as limiter:
        decision = limiter.acquire()
    assert (decision.allowed, decision.fail_open) == (True, False)


async def test_the_async_limiter_is_exact_over_tls_as_an_acl_user(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server, ca=tls_files.ca_cert)
    limiter = AsyncLimiter.from_url(url, strategy("sliding", LIMIT), prefix=prefix)
    decisions = await async_hammer(limiter.acquire)
    await limiter.aclose()
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


COLD_BURST = 32
"""Callers at once, each on a new connection that needs a TLS handshake (and, in redis-py as it
stands, an SSL context made from the system's CA store: 0.6 s for 32 before cps_limiter shared
one context)."""


def test_a_cold_burst_of_tls_callers_is_decided_within_the_bound(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server, ca=tls_files.ca_cert)
    with Limiter.from_url(url, strategy("fixed", 10**6), prefix=prefix) as limiter:
        timed = burst(lambda: limiter.acquire(), COLD_BURST)
    assert not any(decision.fail_open for _, decision in timed)
    assert max(seconds for seconds, _ in timed) <= DECISION_BOUND


async def test_a_cold_burst_of_async_tls_callers_is_decided_before_its_deadline(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server, ca=tls_files.ca_cert)
    limiter = AsyncLimiter.from_url(url, strategy("fixed", 10**6), prefix=prefix)
    started = time.monotonic()
    decisions = await asyncio.gather(*(limiter.acquire() for _ in range(COLD_BURST)))
    elapsed = time.monotonic() - started
    await limiter.aclose()
    assert not any(decision.fail_open for decision in decisions)
    assert elapsed <= DECISION_BOUND


def test_a_certificate_from_a_ca_not_trusted_fails_open_and_says_why(
    tls_server: RedisServer, tls_files: TlsFiles, prefix: str
) -> None:
    url = url_of(tls_server, ca=tls_files.other_ca_cert)
    with captured("cps_limiter") as logs:
        limiter = Limiter.from_url(url, strategy("fixed", LIMIT), prefix=prefix)
        decision = limiter.acquire()
        limiter.close()
    assert (decision.allowed, decision.fail_open) == (True, True)
    assert any("CERTIFICATE_VERIFY_FAILED" in text for text in logs.texts())


# -- wrong credentials ---------------------------------------------------------------------------


@pytest.fixture(params=["acl", "tls"])
def server_and_ca(
    request: pytest.FixtureRequest, tls_files: TlsFiles
) -> tuple[RedisServer, Path | None]:
    if request.param == "acl":
        return request.getfixturevalue("acl_server"), None
    return request.getfixturevalue("tls_server"), tls_files.ca_cert


def assert_refused_naming_user_and_host_only(error: ConfigurationError, port: int) -> None:
    message = str(error)
    assert "refused the credentials" in message
    assert f"user {USER!r} at 127.0.0.1:{port}" in message
    assert leaked(traceback.format_exception(error)) == []
    assert PASSWORD + "-wrong" not in "".join(traceback.format_exception(error))


def test_a_wrong_password_fails_at_start_naming_the_user_and_host_but_not_the_password(
    server_and_ca: tuple[RedisServer, Path | None],
) -> None:
    server, ca = server_and_ca
    with pytest.raises(ConfigurationError) as raised:
        Limiter.from_url(url_of(server, PASSWORD + "-wrong", ca=ca), strategy("fixed", LIMIT))
    assert_refused_naming_user_and_host_only(raised.value, server.port)


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_wrong_password_fails_the_async_limiters_first_call_not_open(
    server_and_ca: tuple[RedisServer, Path | None], fail_mode: str
) -> None:
    """The asyncio from_url sends nothing (it runs inside a coroutine): the first call that
    meets Redis refusing the credentials raises, whatever the fail mode."""
    server, ca = server_and_ca
    wrong = url_of(server, PASSWORD + "-wrong", ca=ca)
    limiter = AsyncLimiter.from_url(wrong, strategy("fixed", LIMIT), fail_mode=fail_mode)
    with pytest.raises(ConfigurationError) as raised:
        await limiter.acquire()
    await limiter.aclose()
    assert_refused_naming_user_and_host_only(raised.value, server.port)


def test_no_password_for_a_server_that_requires_one_fails_at_start(
    acl_server: RedisServer,
) -> None:
    with pytest.raises(ConfigurationError, match="Authentication required"):
        Limiter.from_url(f"redis://127.0.0.1:{acl_server.port}/0", strategy("fixed", LIMIT))


def test_a_redis_that_is_down_at_start_is_no_error_at_start() -> None:
    down = RedisServer(extra_args=acl_args())  # never started
    limiter = Limiter.from_url(url_of(down), strategy("fixed", LIMIT))
    assert limiter.acquire().fail_open
    limiter.close()
    down.cleanup()


@pytest.fixture
def revocable() -> Iterator[RedisServer]:
    """An ACL server of the test's own: the test changes its user's password."""
    server = RedisServer(extra_args=acl_args()).start()
    yield server
    server.cleanup()


def test_a_password_revoked_while_running_fails_open_without_printing_it(
    revocable: RedisServer, prefix: str
) -> None:
    limiter = Limiter.from_url(url_of(revocable), strategy("fixed", LIMIT), prefix=prefix)
    assert not limiter.acquire().fail_open
    root = admin(revocable)
    root.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=["+rotated-elsewhere"])
    root.client_kill_filter(user=USER)
    with captured("cps_limiter") as logs:
        timed = [timed_acquire(limiter) for _ in range(5)]
    root.close()
    limiter.close()
    assert all(d.allowed and d.fail_open for _, d in timed)
    assert max(seconds for seconds, _ in timed) <= DECISION_BOUND
    assert any("AuthenticationError" in text for text in logs.texts())
    assert leaked(logs.texts()) == []


async def test_a_password_revoked_while_the_async_limiter_runs_fails_open(
    revocable: RedisServer, prefix: str
) -> None:
    limiter = AsyncLimiter.from_url(url_of(revocable), strategy("fixed", LIMIT), prefix=prefix)
    assert not (await limiter.acquire()).fail_open
    root = admin(revocable)
    root.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=["+rotated-elsewhere"])
    root.client_kill_filter(user=USER)
    root.close()
    with captured("cps_limiter") as logs:
        decisions = [await limiter.acquire() for _ in range(5)]
    await limiter.aclose()
    assert all(d.allowed and d.fail_open for d in decisions)
    assert leaked(logs.texts()) == []


def test_decisions_are_exact_within_a_second_of_the_password_being_restored(
    revocable: RedisServer, prefix: str
) -> None:
    limiter = Limiter.from_url(url_of(revocable), strategy("fixed", LIMIT), prefix=prefix)
    root = admin(revocable)
    root.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=["+rotated-elsewhere"])
    root.client_kill_filter(user=USER)
    assert limiter.acquire().fail_open
    root.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=[f"+{PASSWORD}"])
    restored = time.monotonic()
    while limiter.acquire("probe").fail_open and time.monotonic() - restored <= RECOVERY_BOUND:
        time.sleep(POLL_SECONDS)
    decisions = hammer(lambda: limiter.acquire("after"))
    root.close()
    limiter.close()
    assert not any(d.fail_open for d in decisions)
    assert sum(d.granted for d in decisions) == LIMIT


def timed_acquire(limiter: Limiter) -> tuple[float, Decision]:
    started = time.monotonic()
    decision = limiter.acquire()
    return time.monotonic() - started, decision


# -- the dialer ----------------------------------------------------------------------------------


def dialer_env(url: str, stub: WorkerStub, prefix: str) -> dict[str, str]:
    return {
        "REDIS_URL": url,
        "NODE_WORKER_URL": stub.url,
        "CPS_KEY_PREFIX": f"{prefix}-cps",
        "IDEMPOTENCY_KEY_PREFIX": f"{prefix}-claim",
    }


def test_the_dialer_dials_over_tls_as_an_acl_user_and_prints_no_password(
    tls_server: RedisServer,
    tls_files: TlsFiles,
    stub: WorkerStub,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = make_batch(3)
    url = url_of(tls_server, ca=tls_files.ca_cert)
    with closing(dialer_for(dialer_env(url, stub, prefix))) as dialer:
        first = dialer.process(batch, FakeContext())
        again = dialer.process(batch, FakeContext())
    printed = capsys.readouterr()
    assert (first["successful"], again["duplicates"]) == (3, 3)
    assert len(stub.calls) == 3
    assert leaked([printed.out, printed.err]) == []


def test_the_dialer_refuses_a_wrong_redis_password_at_start_without_printing_it(
    acl_server: RedisServer, stub: WorkerStub, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = url_of(acl_server, PASSWORD + "-wrong")
    with pytest.raises(ConfigurationError, match="refused the credentials") as raised:
        dialer_for(dialer_env(wrong, stub, prefix))
    printed = capsys.readouterr()
    assert leaked([*traceback.format_exception(raised.value), printed.out, printed.err]) == []


def test_the_dialer_keeps_dialing_when_its_password_is_revoked_and_prints_no_password(
    revocable: RedisServer, stub: WorkerStub, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = admin(revocable)
    with closing(dialer_for(dialer_env(url_of(revocable), stub, prefix))) as dialer:
        root.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=["+rotated-elsewhere"])
        root.client_kill_filter(user=USER)
        root.close()
        with captured("cps_limiter") as logs:
            result = dialer.process(make_batch(3), FakeContext())
    printed = capsys.readouterr()
    events = [json.loads(line).get("event") for line in printed.out.splitlines() if line]
    assert result["successful"] == 3
    assert "redis_unavailable" in events
    assert leaked([printed.out, printed.err, *logs.texts()]) == []
