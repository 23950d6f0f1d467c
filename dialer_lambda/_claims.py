"""Claims that make a dial happen at most once per (campaignId, contactId, attempts).

A pipe redelivers a batch whenever a Lambda fails, times out or reports partial failures, and
a task can sit in two batches at once: the claim, taken before the dial with ``SET NX EX``, is
what keeps a person from being called twice. It lives on the limiter's own Redis connection, so
the dialer needs no second client. What a batch does when Redis fails to claim or release is
decided here too, in `claim` and `give_back`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cps_limiter import BackendUnavailable, Limiter

from ._report import FAIL_CLOSED_ERROR, TaskStatus

if TYPE_CHECKING:
    from ._batch import Batch

DEFAULT_PREFIX: Final = "dialer:claim"
DEFAULT_FLEET_KEY: Final = "cps:fleet"
FLEET_SECONDS: Final = 10.0
"""A container that made no claim for this long no longer counts as dialing."""


class FleetPeak:
    """The most containers a store heard of within the last `FLEET_SECONDS`. A Redis that
    restarted empty has lost every heartbeat, and the first claim after it counts one container:
    taken as it is, a container would think itself alone and, at the next outage, take the
    whole limit. Heartbeats refill the count within `FLEET_SECONDS`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (when, count), counts strictly falling: the front is the peak of the window.
        self._peaks: deque[tuple[float, int]] = deque()

    def heard(self, count: int) -> int:
        """The peak, ``count`` included."""
        now = time.monotonic()
        with self._lock:
            while self._peaks and self._peaks[-1][1] <= count:
                self._peaks.pop()
            self._peaks.append((now, count))
            while self._peaks[0][0] < now - FLEET_SECONDS:
                self._peaks.popleft()
            return self._peaks[0][1]


def claim_key(
    campaign_id: str, contact_id: str, attempts: int, prefix: str = DEFAULT_PREFIX
) -> str:
    """The claim's key: a digest, so that ids holding ``{``, ``*``, spaces or 10,000 characters
    can neither escape the prefix nor pick a Redis Cluster slot."""
    identity = json.dumps([campaign_id, contact_id, attempts], separators=(",", ":"))
    return f"{prefix}:{hashlib.sha256(identity.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class ClaimStore:
    """Batch claims and releases, one pipelined round trip each, through the limiter's own
    client, breaker and error boundary (`Limiter.run`): a Redis failure is the same event for
    the claims as for the permits, and a connection that died while idle is replaced for both.

    The pipeline is not a transaction (``transaction=False``): each ``SET NX`` stands alone, and
    on a Redis Cluster the keys of one batch may live in different slots. The claims' round trip
    also carries this container's heartbeat in ``fleet_key``: how many containers dial is what
    each one's share of the limit is while Redis is down, learned at no extra round trip.
    """

    limiter: Limiter
    ttl: int
    prefix: str = DEFAULT_PREFIX
    fleet_key: str = DEFAULT_FLEET_KEY
    container: str = field(default_factory=lambda: uuid.uuid4().hex)
    fleet: FleetPeak = field(default_factory=FleetPeak, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {self.ttl!r}")

    def key(self, campaign_id: str, contact_id: str, attempts: int) -> str:
        return claim_key(campaign_id, contact_id, attempts, self.prefix)

    def claim(self, keys: Sequence[str], owner: str) -> tuple[list[bool], int]:
        """Claim each key for ``owner``: True where the claim is new, False for a repeat; and
        how many containers dialed within the last `FLEET_SECONDS`, this one included (the
        most this store heard of in that time: see `FleetPeak`).

        Raises `BackendUnavailable` when Redis cannot be reached: the caller decides whether to
        fail open.
        """
        now = time.time_ns() // 1_000_000
        window = int(FLEET_SECONDS * 1000)

        def claim_all(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, owner, nx=True, ex=self.ttl)
                # Whose the claim is, read back: a round trip retried after Redis ran it (a
                # reply lost to a dead connection) finds its own claim, which is no repeat.
                pipe.get(key)
            pipe.zadd(self.fleet_key, {self.container: now})
            pipe.zremrangebyscore(self.fleet_key, "-inf", now - window)
            pipe.zcard(self.fleet_key)
            pipe.pexpire(self.fleet_key, 2 * window)
            return list(pipe.execute())

        replies = self.limiter.run(claim_all)
        mine = owner.encode()
        holders = replies[1 : 2 * len(keys) : 2]
        # The same task twice in one batch: its first place holds the claim, the second repeats.
        seen: set[str] = set()
        fresh = []
        for key, holder in zip(keys, holders, strict=True):
            fresh.append(holder in (owner, mine) and key not in seen)
            seen.add(key)
        return fresh, self.fleet.heard(max(int(replies[-2]), 1))

    def release(self, keys: Sequence[str]) -> None:
        """Give up claims whose dial surely never reached the worker, so a retry may dial.

        A plain DEL, not compare-and-delete: a claim outlives a Lambda's 15 minutes by hours,
        so the key deleted here is the one this invocation set. Raises like `claim`.
        """
        if not keys:
            return

        def release_all(client: Any) -> None:
            # One DEL per key in a pipeline: a multi-key DEL fails across cluster slots.
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            pipe.execute()

        self.limiter.run(release_all)


def claim(batch: Batch, ready: list[int]) -> list[int]:
    """The ready tasks this batch may dial, claimed in one round trip; a repeat is a duplicate.
    When Redis fails the batch dials without claims (fail open, as for the rate limit: a batch
    redelivered meanwhile may dial again), or with ``CPS_FAIL_MODE=closed`` hands all back."""
    store = batch.dialer.claims
    keys = [
        store.key(task.campaign_id, task.contact_id, task.attempts)
        for task in (batch.tasks[index] for index in ready)
    ]
    if not keys:
        return []
    try:
        # Unique to this batch, as it recognises its own claims by it.
        owner = f"{batch.request_id}@{time.time_ns() // 1_000_000}/{uuid.uuid4().hex[:8]}"
        fresh, containers = store.claim(keys, owner)
    except BackendUnavailable as error:
        closed = batch.dialer.settings.fail_mode == "closed"
        batch.redis_down(
            logging.ERROR if closed else logging.WARNING,
            "claim",
            "Redis unavailable for idempotency claims; "
            + ("not dialing (fail closed)" if closed else "dialing without them"),
            error=repr(error),
        )
        if not closed:
            return ready
        for index in ready:
            batch.finish(index, TaskStatus.RATE_LIMITED, FAIL_CLOSED_ERROR, retry=True)
        return []
    batch.dialer.limiter.set_peers(containers)
    claimed: list[int] = []
    for index, key, new in zip(ready, keys, fresh, strict=True):
        if new:
            batch.claimed[index] = key
            claimed.append(index)
        else:
            batch.finish(index, TaskStatus.DUPLICATE)
            message = "task already dialed or being dialed; skipped"
            batch.log(logging.INFO, "duplicate_task", message, task=index)
    return claimed


def give_back(batch: Batch, keys: list[str]) -> None:
    """Release ``keys`` in one round trip; a Redis failure is logged, not raised."""
    try:
        batch.dialer.claims.release(keys)
    except BackendUnavailable as error:
        # Safe but costly: the retried tasks will count as duplicates until the claims
        # expire, so they are not called (rather than possibly called twice).
        batch.redis_down(
            logging.ERROR,
            "release",
            "could not release idempotency claims; retried tasks will be skipped as "
            "duplicates until the claims expire",
            claims=len(keys),
            error=repr(error),
        )
