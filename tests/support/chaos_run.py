"""One schedule run end to end: a dialer meeting the fault, the pipe redelivering until nothing
is left, and the promises checked on what reached the worker and what is left in Redis."""

from __future__ import annotations

import contextlib
import copy
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from dialer_lambda import BatchResult, Dialer, Settings
from dialer_lambda._claims import task_identity
from loadtest.tasks import seed_task
from loadtest.worker_stub import WorkerStub
from tests.support.chaos import (
    FaultyTransport,
    Injector,
    Killed,
    Schedule,
    faulty_connection,
    with_faults,
)

BATCH = 10
MAX_CPS = 500
CONCURRENT_CALLS = 100
DIAL_TIMEOUT = 0.25
WAIT_BUDGET = 0.2
PENDING_MARGIN = 0.1
IDEMPOTENCY_TTL = 600
CALL_MAX_SECONDS = 600
MAX_DELIVERIES = 8
REDELIVERY_SLACK = 0.1


@dataclass
class Verdict:
    """What one schedule came to; ``problems`` lists every promise it broke."""

    schedule: Schedule
    deliveries: int = 0
    placed: Counter[str] = field(default_factory=Counter)
    """Calls placed per task (its idempotency key)."""
    died_unrecorded: set[str] = field(default_factory=set)
    """Tasks whose claim was not recorded sent when the process died: of those, the ones it had
    sent died in the window between sending the POST and recording it."""
    placed_call_ids: set[str] = field(default_factory=set)
    fired: bool = False
    """Whether the fault met its boundary (an occurrence the batch never reached is none)."""
    history: list[str] = field(default_factory=list)
    """What each delivery came to, for the report of a broken promise."""
    problems: list[str] = field(default_factory=list)

    @property
    def twice(self) -> set[str]:
        return {key for key, count in self.placed.items() if count > 1}


def chaos_tasks(campaign: str, *, limited: bool) -> list[dict[str, Any]]:
    tasks = []
    for index in range(BATCH):
        task = seed_task(limits=limited)
        task["campaign"] = copy.deepcopy(task["campaign"])
        task["campaign"]["id"] = campaign
        if limited:
            task["campaign"]["config"]["maxConcurrentCalls"] = CONCURRENT_CALLS
        task.update(
            campaignId=campaign,
            contactId=f"contact-{index}",
            phoneNumber=f"+9725013{index:05d}",
            messageId=f"{campaign}-m{index}",
        )
        tasks.append(task)
    return tasks


def run_schedule(schedule: Schedule, redis_port: int, stub: WorkerStub) -> Verdict:
    verdict = Verdict(schedule)
    run = uuid.uuid4().hex[:8]
    campaign = f"chaos-{schedule.seed}-{run}"
    cps_prefix, claim_prefix = f"chaos{run}", f"chaos{run}:claim"
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        node_worker_url=stub.url,
        max_cps=MAX_CPS,
        dial_timeout=DIAL_TIMEOUT,
        rate_limit_max_wait=WAIT_BUDGET,
        idempotency_ttl=IDEMPOTENCY_TTL,
        call_max_seconds=CALL_MAX_SECONDS,
        worker_frees_leases=True,
        cps_key_prefix=cps_prefix,
        idempotency_key_prefix=claim_prefix,
        log_level="CRITICAL",
    )
    injector = Injector(schedule)
    dialer = Dialer.from_settings(
        settings,
        redis_options={"connection_class": faulty_connection(injector, claim_prefix)},
        worker_transport=FaultyTransport(injector, DIAL_TIMEOUT),
    )
    dialer = replace(dialer, claims=replace(dialer.claims, pending_margin=PENDING_MARGIN))
    lifetime = WAIT_BUDGET + DIAL_TIMEOUT + PENDING_MARGIN
    tasks = {task["messageId"]: task for task in chaos_tasks(campaign, limited=schedule.limited)}
    keys = {m: task_identity(campaign, t["contactId"], 0) for m, t in tasks.items()}
    client = redis.Redis(port=redis_port, decode_responses=True)
    try:
        due = list(tasks)
        while due and verdict.deliveries < MAX_DELIVERIES:
            verdict.deliveries += 1
            started = time.monotonic()
            result = _deliver(with_faults(dialer, injector), [tasks[m] for m in due], verdict)
            if result is None and injector.dead:
                verdict.died_unrecorded |= _unrecorded(client, claim_prefix, keys)
            verdict.history.append(
                "died"
                if result is None
                else f"{result['successful']}s/{result['duplicates']}d/{result['failed']}f/"
                f"{result['rateLimited']}r/{len(result['batchItemFailures'])}back"
            )
            injector.armed, injector.dead = False, False
            if result is None:
                _check_accounted(verdict, None, due)
            else:
                _check_accounted(verdict, result, due)
                due = [f["itemIdentifier"] for f in result["batchItemFailures"]]
            # The pipe redelivers after the visibility timeout: past the invocation's end and
            # its claims' margin (docs/deployment.md sets the queue's visibility timeout so).
            time.sleep(max(0.0, started + lifetime + REDELIVERY_SLACK - time.monotonic()))
            _wait_for_pending_claims(verdict, client, claim_prefix, lifetime)
        injector.settle()
        verdict.fired = injector.fired
        if due:
            verdict.problems.append(f"{len(due)} task(s) still coming back after {MAX_DELIVERIES}")
        _check_worker(verdict, stub, campaign, keys)
        _check_redis(verdict, client, settings, campaign, lifetime)
    finally:
        with contextlib.suppress(Exception):
            dialer.close()
        client.close()
    return verdict


def _wait_for_pending_claims(
    verdict: Verdict, client: redis.Redis, claim_prefix: str, lifetime: float
) -> None:
    """Until no claim is pending: a claim taken late on a busy machine ends late too, and
    the visibility timeout is longer than the test's deadline by far. A pending claim that
    outlives its bound is a broken promise."""
    while True:
        pending = [
            client.pttl(key)
            for key in client.scan_iter(f"{claim_prefix}:*")
            if str(client.get(key) or "").startswith("pending:")
        ]
        if not pending:
            return
        if max(pending) > lifetime * 1000:
            verdict.problems.append(f"a pending claim outlives its bound: {max(pending)} ms")
            return
        time.sleep(0.02)


def _deliver(dialer: Dialer, batch: list[dict[str, Any]], verdict: Verdict) -> BatchResult | None:
    """The result, or None when the invocation failed (killed, or raised): the pipe then
    redelivers the whole batch."""
    try:
        return dialer.process(batch, None)
    except Killed:
        return None
    except Exception as error:
        verdict.problems.append(f"the invocation raised {error!r}")
        return None


def _check_accounted(verdict: Verdict, result: BatchResult | None, due: list[str]) -> None:
    if result is None:
        return
    counted = result["successful"] + result["failed"] + result["rateLimited"]
    if result["totalProcessed"] != len(due) or counted + result["duplicates"] != len(due):
        verdict.problems.append(f"a result does not account for every task: {result}")


def _placed_calls(stub: WorkerStub, campaign: str) -> list[Any]:
    return [c for c in stub.calls if c.body and c.body.get("campaignId") == campaign and c.placed]


def _unrecorded(client: redis.Redis, claim_prefix: str, keys: dict[str, str]) -> set[str]:
    """The tasks whose send the dead container had not recorded (their claim still pending, or
    gone): only these may reach the worker again. Read from the claims, not from the worker,
    whose record of a POST in flight at the death may come later."""
    found = set()
    for key in keys.values():
        held = client.get(f"{claim_prefix}:{key}")
        if held is None or str(held).startswith("pending:"):
            found.add(key)
    return found


def _check_worker(verdict: Verdict, stub: WorkerStub, campaign: str, keys: dict[str, str]) -> None:
    calls = [c for c in stub.calls if c.body and c.body.get("campaignId") == campaign]
    for call in calls:
        if call.placed:
            verdict.placed[call.key or ""] += 1
            verdict.placed_call_ids.add(str(call.call_id))
    unexplained = verdict.twice - verdict.died_unrecorded
    if unexplained:
        verdict.problems.append(
            f"placed twice: {len(unexplained)} (unrecorded at a death: "
            f"{len(verdict.died_unrecorded)}, "
            f"deliveries {verdict.history})"
        )
    if stub.honour_keys and verdict.twice:
        verdict.problems.append(f"placed twice through a worker honouring the key: {verdict.twice}")
    never = [m for m, key in keys.items() if verdict.placed[key] == 0]
    if never:
        verdict.problems.append(
            f"never placed and not coming back: {never} (deliveries {verdict.history})"
        )


def _check_redis(
    verdict: Verdict, client: redis.Redis, settings: Settings, campaign: str, lifetime: float
) -> None:
    for key in client.scan_iter(f"{settings.idempotency_key_prefix}:*"):
        held, ttl = client.get(key), client.pttl(key)
        if held is None:
            continue
        if str(held).startswith("pending:") and ttl > lifetime * 1000:
            verdict.problems.append(f"a pending claim outlives its bound: {ttl} ms")
        if str(held).startswith("sent:") and ttl > settings.idempotency_ttl * 1000:
            verdict.problems.append(f"a sent claim outlives the idempotency TTL: {ttl} ms")
    for key in client.scan_iter(f"{settings.cps_key_prefix}:*"):
        suffix = key.rsplit(":", 1)[-1]
        if suffix.isdigit() and client.type(key) == "string":
            count = int(client.get(key) or 0)
            if count > settings.max_cps:
                verdict.problems.append(f"counter {key} at {count}, over {settings.max_cps}")
    leases = f"{settings.cps_key_prefix}:campaign:{campaign}:leases"
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    for member, expiry in client.zrange(leases, 0, -1, withscores=True):
        # A lease lives CALL_MAX_SECONDS from its permit's moment, at most the wait ahead.
        if expiry > now_ms + (settings.call_max_seconds + settings.rate_limit_max_wait) * 1000:
            verdict.problems.append(f"lease {member} outlives CALL_MAX_SECONDS")
        # Only a process that died can leave the lease of a call it never placed: nothing is
        # left to free it, and it expires after CALL_MAX_SECONDS.
        if member not in verdict.placed_call_ids and verdict.schedule.fault != "kill":
            verdict.problems.append(f"lease {member} held for a call never placed")
    live = client.zcount(leases, now_ms, "+inf")
    if live > CONCURRENT_CALLS:
        verdict.problems.append(f"{live} leases live, over maxConcurrentCalls")
