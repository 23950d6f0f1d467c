"""A pooled Redis connection that died while the sandbox sat idle, under the real runtime client.

A NAT gateway drops an idle flow after 350 s and a frozen sandbox keeps no socket alive, so the
connection a warm invocation (or the first one long after init) takes from the pool may be dead
while Redis is fine. It is killed here three ways: Redis closes it (``CLIENT KILL``), or a proxy
in between answers its next bytes with a reset, or goes silent on it for good; new connections
work. The claims must still be taken, so that a batch redelivered after it dials no one again;
and a Redis that is really stalled must still cost no decision more than 250 ms.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import redis

from loadtest.runtime.api import InvocationEnd, RuntimeApi
from loadtest.runtime.process import RuntimeProcess
from loadtest.servers import RedisServer
from loadtest.worker_stub import WorkerStub
from tests.support.connections import KILLS, client_kill
from tests.support.dialer import make_batch
from tests.support.faults import DECISION_BOUND
from tests.support.proxy import BlackholeProxy

BATCH = 10

UNAVAILABLE = "Redis unavailable"
STALLED_INVOCATION_BOUND_MS = 2 * DECISION_BOUND * 1000 + 1000
"""A stalled Redis costs the claims and the permits one decision each; the dials (the stub
answers at once) and the rest of the batch get a second on top."""


@dataclass(frozen=True)
class Sandbox:
    """One execution environment, and a way to kill the Redis connections it holds now."""

    api: RuntimeApi
    process: RuntimeProcess
    kill_pooled: Callable[[], None]

    def run(self, batch: list[dict[str, Any]]) -> tuple[InvocationEnd, list[dict[str, Any]]]:
        """Invoke and wait for the end: the result, and the JSON lines the batch printed."""
        end = self.api.run(batch)
        assert end.outcome == "response", end.body
        return end, _batch_log(self.process, end.request_id)


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                parsed.append(value)
    return parsed


def _batch_log(process: RuntimeProcess, request_id: str) -> list[dict[str, Any]]:
    """The lines from the batch's ``batch_start`` to its ``batch_end``: one invocation runs at
    a time, so every line between is the batch's, the limiter's included."""

    def marks(lines: list[dict[str, Any]]) -> list[int]:
        return [
            at
            for at, line in enumerate(lines)
            if line.get("requestId") == request_id
            and line.get("event") in {"batch_start", "batch_end"}
        ]

    lines = _json_lines(process.wait_stdout(lambda out: len(marks(_json_lines(out))) == 2))
    start, end = marks(lines)
    return lines[start : end + 1]


def _unavailable(process: RuntimeProcess, log: list[dict[str, Any]]) -> list[str]:
    """Every 'Redis unavailable' message of the batch, with its error, and any on stderr."""
    return [
        f"{line['message']} ({line.get('error')})"
        for line in log
        if UNAVAILABLE in str(line.get("message"))
    ] + [line for line in process.stderr.splitlines() if UNAVAILABLE in line]


def _claims(raw_redis: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in raw_redis.scan_iter(match=f"{prefix}:claim:*"))


def _broke(count: int) -> None:
    assert count > 0, "the proxy held no connection to break"


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[BlackholeProxy]:
    with BlackholeProxy(redis_server.port) as running:
        yield running


@pytest.fixture
def start_sandbox(
    redis_url: str,
    proxy: BlackholeProxy,
    raw_redis: redis.Redis,
    stub: WorkerStub,
    prefix: str,
) -> Iterator[Callable[[str], Sandbox]]:
    """``start_sandbox(kill)``: the handler under the runtime client, on the suite's Redis
    (straight, for CLIENT KILL; through the proxy otherwise), its connections named after the
    test's prefix and its keys under it."""
    with contextlib.ExitStack() as stack:
        started: list[RuntimeApi] = []

        def start(kill: str) -> Sandbox:
            kills: dict[str, tuple[str, Callable[[], None]]] = {
                "client-kill": (redis_url, lambda: client_kill(raw_redis, prefix)),
                "reset": (proxy.url, lambda: _broke(proxy.reset_existing())),
                "silent": (proxy.url, lambda: _broke(proxy.silence_existing())),
            }
            url, kill_pooled = kills[kill]
            env = {
                "REDIS_URL": f"{url}?client_name={prefix}",
                "NODE_WORKER_URL": stub.url,
                "CPS_KEY_PREFIX": f"{prefix}:cps",
                "IDEMPOTENCY_KEY_PREFIX": f"{prefix}:claim",
                "DIAL_TIMEOUT_SECONDS": "2",
            }
            api = stack.enter_context(RuntimeApi())
            started.append(api)
            return Sandbox(api, stack.enter_context(RuntimeProcess(api, env)), kill_pooled)

        yield start
    assert [api.violations for api in started] == [[] for _ in started]


@pytest.mark.parametrize("kill", KILLS)
def test_a_batch_redelivered_after_its_pooled_connection_died_dials_no_one_again(
    start_sandbox: Callable[[str], Sandbox], stub: WorkerStub, kill: str
) -> None:
    sandbox = start_sandbox(kill)
    first, _ = sandbox.run(make_batch(BATCH))
    assert (first.json()["successful"], len(stub.calls)) == (BATCH, BATCH)
    sandbox.kill_pooled()

    redelivered, log = sandbox.run(make_batch(BATCH))

    assert {
        "new dials": len(stub.calls) - BATCH,
        "duplicates": redelivered.json()["duplicates"],
        "Redis unavailable": _unavailable(sandbox.process, log),
    } == {"new dials": 0, "duplicates": BATCH, "Redis unavailable": []}


@pytest.mark.parametrize("kill", KILLS)
def test_the_first_batch_long_after_init_claims_its_tasks_although_the_init_connection_died(
    start_sandbox: Callable[[str], Sandbox],
    stub: WorkerStub,
    raw_redis: redis.Redis,
    prefix: str,
    kill: str,
) -> None:
    sandbox = start_sandbox(kill)
    sandbox.api.wait_init_done()  # the import PINGed: the pool holds that connection
    sandbox.kill_pooled()

    first, log = sandbox.run(make_batch(BATCH))
    claims = _claims(raw_redis, prefix)
    redelivered, _ = sandbox.run(make_batch(BATCH))

    assert {
        "dialed by the first": first.json()["successful"],
        "claims after the first": claims,
        "Redis unavailable in the first": _unavailable(sandbox.process, log),
        "dials in all": len(stub.calls),
        "duplicates on redelivery": redelivered.json()["duplicates"],
    } == {
        "dialed by the first": BATCH,
        "claims after the first": BATCH,
        "Redis unavailable in the first": [],
        "dials in all": BATCH,
        "duplicates on redelivery": BATCH,
    }


def _at(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]))


def _decision_ms(log: list[dict[str, Any]]) -> dict[str, float]:
    """How long the claims and the permits took, from the log's millisecond timestamps: the
    claims from the batch's start to their fail-open line, the permits from there to the
    ``cps_check`` line (which the limiter's own fail-open warning precedes)."""
    start = next(line for line in log if line.get("event") == "batch_start")
    claims = [
        line
        for line in log
        if line.get("event") == "redis_unavailable" and line.get("operation") == "claim"
    ]
    assert claims, f"the claims did not fail open on a stalled Redis: {log}"
    permits = next(line for line in log if line.get("event") == "cps_check")
    return {
        "claims": (_at(claims[-1]) - _at(start)).total_seconds() * 1000,
        "permits": (_at(permits) - _at(claims[-1])).total_seconds() * 1000,
    }


def test_a_stalled_redis_costs_no_decision_more_than_250_ms(
    start_sandbox: Callable[[str], Sandbox], proxy: BlackholeProxy
) -> None:
    sandbox = start_sandbox("silent")
    sandbox.api.wait_init_done()
    proxy.blackhole()  # every connection, the pooled one and any new one

    end, log = sandbox.run(make_batch(BATCH))

    took = _decision_ms(log)
    assert max(took.values()) <= DECISION_BOUND * 1000, took
    assert end.ended_ms - end.started_ms <= STALLED_INVOCATION_BOUND_MS, (
        f"{end.ended_ms - end.started_ms} ms; decisions {took}"
    )
