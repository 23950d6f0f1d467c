"""Hostile input, fuzzed with hypothesis: scopes, events, tasks, phone numbers, ids and URLs of
every wrong shape. Never a crash, never a key outside the prefix, every task in the result."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cps_limiter import ConfigurationError, Limiter, RateLimitExceeded
from dialer_lambda import Dialer, Settings
from dialer_lambda._claims import claim_key
from dialer_lambda._tasks import E164, message_id_of
from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, dialer_for, make_task
from tests.support.load import strategy

PREFIX = "hostile"
MAX_SCOPE = 200
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- scopes ---------------------------------------------------------------------------------

NASTY = "*?[]{}\\:\n\r\t\x00\x1b\x7f\x85\x9b\u2028\u200b\u202e é"
SCOPES = st.one_of(
    st.text(max_size=MAX_SCOPE + 20),
    st.text(alphabet=NASTY + "abc", min_size=1, max_size=30),
    st.integers(MAX_SCOPE - 2, 10_000).map(lambda n: "a" * n),
    st.integers(1, 10_000).flatmap(
        lambda n: st.sampled_from(list(NASTY)).map(lambda c: "a" * n + c)
    ),
)
NOT_STRINGS = st.one_of(
    st.integers(), st.binary(max_size=10), st.lists(st.text(max_size=3), max_size=2), st.floats()
)


def contract_allows(scope: str) -> bool:
    """The contract: not empty, at most 200 characters, no whitespace, control characters or
    braces. Control characters in Unicode's sense: every category C (format characters,
    surrogates, unassigned), which is what isprintable() refuses besides separators."""
    return (
        0 < len(scope) <= MAX_SCOPE
        and scope.isprintable()
        and not any(c.isspace() for c in scope)
        and not any(c in "{}" for c in scope)
    )


@pytest.fixture(scope="module")
def scoped() -> Iterator[tuple[Limiter, redis.Redis]]:
    """A limiter on a redis-server of this module's own, and a client that sees every key."""
    server = RedisServer().start()
    limiter = Limiter.from_url(
        server.url, strategy("fixed", 10**6), prefix=PREFIX, deny_cache=False
    )
    client = redis.Redis(port=server.port)
    yield limiter, client
    client.close()
    limiter.close()
    server.cleanup()


@FUZZ
@given(scope=SCOPES)
def test_a_scope_the_contract_forbids_is_refused(
    scoped: tuple[Limiter, redis.Redis], scope: str
) -> None:
    limiter, _ = scoped
    assume(not contract_allows(scope))
    with pytest.raises(ConfigurationError):
        limiter.acquire(scope)


@FUZZ
@given(scope=SCOPES)
def test_a_scope_is_refused_or_its_keys_stay_under_the_prefix(
    scoped: tuple[Limiter, redis.Redis], scope: str
) -> None:
    limiter, client = scoped
    try:
        decision = limiter.acquire(scope)
    except ConfigurationError:
        return  # refused: nothing was written
    keys = [key.decode() for key in client.scan_iter(count=1000)]
    assert (decision.allowed, decision.fail_open) == (True, False)
    assert all(key.startswith(f"{PREFIX}:") for key in keys)
    assert any(re.fullmatch(re.escape(f"{PREFIX}:{scope}:") + r"\d+", key) for key in keys)


@FUZZ
@given(scope=NOT_STRINGS)
def test_a_scope_that_is_not_a_string_is_refused(
    scoped: tuple[Limiter, redis.Redis], scope: Any
) -> None:
    limiter, _ = scoped
    with pytest.raises(ConfigurationError, match="scope must be a str"):
        limiter.acquire(scope)


# -- events and tasks --------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "+972501234567", "active", "2024-01-15T10:30:00Z", "x" * 10_000]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
TASK_FIELDS = [
    ("campaignId",),
    ("contactId",),
    ("phoneNumber",),
    ("attempts",),
    ("metadata",),
    ("messageId",),
    ("campaign",),
    ("campaign", "id"),
    ("campaign", "status"),
    ("campaign", "timezone"),
    ("campaign", "config"),
    ("campaign", "config", "audioFileUrl"),
    ("campaign", "config", "ivrFlow"),
    ("campaign", "config", "callingWindows"),
]
_DELETE = object()


@st.composite
def mutated_tasks(draw: st.DrawFn) -> Any:
    """The seed's task with some fields replaced by anything JSON can hold, or removed."""
    task = make_task(draw(st.integers(0, 50)), messageId=f"m-{uuid.uuid4().hex[:8]}")
    for path in draw(st.lists(st.sampled_from(TASK_FIELDS), max_size=3, unique=True)):
        value = draw(st.one_of(JSON, st.just(_DELETE)))
        parent: Any = task
        for step in path[:-1]:
            parent = parent.get(step) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            if value is _DELETE:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = copy.deepcopy(value)
    return task


EVENTS = st.lists(st.one_of(mutated_tasks(), JSON), max_size=8)


@pytest.fixture(scope="module")
def fuzzed_dialer() -> Iterator[Dialer]:
    """A dialer on an in-process Redis, with a limit no fuzzed batch reaches."""
    with WorkerStub() as stub:
        env = {
            "REDIS_URL": f"memory://{uuid.uuid4().hex}",
            "NODE_WORKER_URL": stub.url,
            "MAX_CPS": "1000000",
            "RATE_LIMIT_MAX_WAIT_SECONDS": "0",
            "DIAL_TIMEOUT_SECONDS": "2",
        }
        with closing(dialer_for(env)) as dialer:
            yield dialer


@FUZZ
@given(event=EVENTS)
def test_a_batch_of_anything_never_crashes_and_accounts_for_every_task(
    fuzzed_dialer: Dialer, event: list[Any]
) -> None:
    try:
        result = fuzzed_dialer.process(event, FakeContext())
    except RateLimitExceeded:
        # The contract's one exception: a task to retry that carries no usable messageId.
        assert any(message_id_of(raw) is None for raw in event)
        return
    except ValueError as error:
        # An item that is not an object: the error names it.
        named = "event[" in str(error)
        assert named
        assert not all(isinstance(raw, dict) for raw in event)
        return
    counted = result["successful"] + result["failed"] + result["rateLimited"]
    assert result["totalProcessed"] == len(event) == counted + result["duplicates"]
    assert len(result["errors"]) == result["failed"]
    ids = {message_id_of(raw) for raw in event}
    assert {failure["itemIdentifier"] for failure in result["batchItemFailures"]} <= ids


@FUZZ
@given(event=JSON.filter(lambda value: not isinstance(value, list)))
def test_an_event_that_is_not_a_list_raises_a_value_error(
    fuzzed_dialer: Dialer, event: Any
) -> None:
    with pytest.raises(ValueError, match="event must be a JSON array"):
        fuzzed_dialer.process(event, FakeContext())


# -- phone numbers ----------------------------------------------------------------------------

PHONES = st.one_of(
    st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True),
    st.text(max_size=20),
    st.from_regex(r"[+0]{0,2}[0-9 ().-]{6,20}", fullmatch=True),
    st.sampled_from(
        [
            "+972 50 123 4567",
            "00972501234567",
            "+0972501234567",
            "+9725012345678901",
            "+972501234567\n",
            " +972501234567",
            "+" + "".join(chr(0x0660 + int(d)) for d in "972501234567"),  # Arabic-Indic
            "+" + "".join(chr(0xFF10 + int(d)) for d in "972501234567"),  # full-width
            "+972-50-123-4567",
            "tel:+972501234567",
        ]
    ),
    st.integers(),
    st.floats(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=2),
)


@FUZZ
@given(phone=PHONES)
def test_a_phone_number_is_dialed_only_in_e164_and_never_printed_in_full(
    fuzzed_dialer: Dialer, capsys: pytest.CaptureFixture[str], phone: Any
) -> None:
    capsys.readouterr()
    task = make_task(0, contactId=f"c-{uuid.uuid4().hex}", phoneNumber=phone)
    result = fuzzed_dialer.process([task], FakeContext())
    printed = capsys.readouterr().out
    valid = isinstance(phone, str) and E164.fullmatch(phone) is not None
    assert result["successful"] == (1 if valid else 0)
    if not valid:
        (error,) = result["errors"]
        assert error["error"].startswith("invalid task:")
        assert result["batchItemFailures"] == [{"itemIdentifier": task["messageId"]}]
    if isinstance(phone, str) and sum(c.isdigit() for c in phone) >= 7:
        assert phone.strip() not in printed


# -- ids and URLs -------------------------------------------------------------------------------


@FUZZ
@given(campaign=st.text(), contact=st.text(), attempts=st.integers())
def test_a_claim_key_is_a_digest_under_its_prefix_whatever_the_ids(
    campaign: str, contact: str, attempts: int
) -> None:
    assert re.fullmatch(r"dialer:claim:[0-9a-f]{64}", claim_key(campaign, contact, attempts))


@FUZZ
@given(scheme=st.from_regex(r"[a-zA-Z][a-zA-Z0-9+.-]{0,10}", fullmatch=True))
def test_node_worker_url_must_be_http_or_https(scheme: str) -> None:
    url = f"{scheme}://worker.internal:3000"
    if scheme in {"http", "https"}:
        assert Settings.from_env({"NODE_WORKER_URL": url}).node_worker_url == url
        return
    with pytest.raises(ConfigurationError, match="NODE_WORKER_URL"):
        Settings.from_env({"NODE_WORKER_URL": url})


@pytest.mark.parametrize(
    "url",
    ["localhost:3000", "//worker:3000", "http://", "file:///etc/passwd", "javascript:alert(1)"],
)
def test_a_node_worker_url_without_an_http_scheme_and_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="NODE_WORKER_URL"):
        Settings.from_env({"NODE_WORKER_URL": url})
