"""A container killed (SIGKILL) while its paced dials wait, under the real runtime client: the
pipe redelivers its batch after the deadline to a new container, which dials what the first
never sent. Every task is placed once, none twice."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from loadtest.runtime.api import RuntimeApi
from loadtest.runtime.process import RuntimeProcess
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import make_batch

pytestmark = pytest.mark.slow

BATCH = 10
MAX_CPS = 4
FUNCTION_TIMEOUT = 6.0
SENT_BEFORE_KILL = 6
PENDING_MARGIN = 2.0
"""`dialer_lambda._claims.PENDING_MARGIN_SECONDS`, the bound checked on what the kill left."""
WAIT = 30.0


def _until(found: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not found():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def test_a_batch_killed_mid_pacing_is_dialed_once_by_the_next_container(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    claims = f"{prefix}:claim:*"

    def held() -> dict[str, str]:
        return {key: str(client.get(key)) for key in client.scan_iter(claims)}

    with WorkerStub() as stub:
        env = {
            "REDIS_URL": redis_url,
            "NODE_WORKER_URL": stub.url,
            "CPS_KEY_PREFIX": f"{prefix}:cps",
            "IDEMPOTENCY_KEY_PREFIX": f"{prefix}:claim",
            "DIAL_TIMEOUT_SECONDS": "2",
            "MAX_CPS": str(MAX_CPS),
        }
        with RuntimeApi() as api, RuntimeProcess(api, env) as first:
            api.invoke(make_batch(BATCH), timeout=FUNCTION_TIMEOUT)
            # Killed once six sends are recorded: the seventh is still waiting for its moment.
            _until(
                lambda: sum(v.startswith("sent:") for v in held().values()) >= SENT_BEFORE_KILL,
                "six dials recorded as sent",
            )
            first.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            pending = [client.pttl(k) for k, v in held().items() if v.startswith("pending:")]
        assert pending, "the kill left no task unsent: nothing to check"
        assert max(pending) <= (FUNCTION_TIMEOUT + PENDING_MARGIN) * 1000
        # The pipe redelivers after the visibility timeout, past the deadline: by then every
        # pending claim the killed container held has ended.
        _until(lambda: not any(v.startswith("pending:") for v in held().values()), "expiry")
        waited = time.monotonic() - killed_at

        due = make_batch(BATCH)
        results = []
        with RuntimeApi() as api, RuntimeProcess(api, env):
            while due:
                end = api.run(due, timeout=FUNCTION_TIMEOUT)
                results.append(end.json())
                again = {f["itemIdentifier"] for f in end.json()["batchItemFailures"]}
                due = [task for task in due if task["messageId"] in again]
        placed = Counter(call.phone_number for call in stub.calls if call.placed)
        arrived = Counter(call.phone_number for call in stub.calls)
    client.close()

    assert results[0]["duplicates"] == len(placed) - sum(r["successful"] for r in results)
    assert sorted(placed.values()) == [1] * BATCH, f"placed: {placed}"
    assert max(arrived.values()) == 1, f"a task reached the worker twice: {arrived}"
    assert waited <= FUNCTION_TIMEOUT + PENDING_MARGIN
