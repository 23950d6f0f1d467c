"""Claims that make a dial happen at most once per (campaignId, contactId, attempts).

A pipe redelivers a batch whenever a Lambda fails, times out or reports partial failures, and
a task can sit in two batches at once: the claim, taken before the dial with ``SET NX``, is what
keeps a person from being called twice. A claim has two lives:

- *pending*, from the claims' round trip until shortly after the invocation's deadline: if the
  container dies before it dials (killed, frozen, out of memory), the claim expires and the
  redelivery, which comes after the deadline, dials the task;
- *sent*, for ``IDEMPOTENCY_TTL_SECONDS``, once the POST has left: a redelivery is a duplicate.

The send is recorded after the POST, never before: before could lose a task whose container
died between the two, after can call twice in that window, which the worker closes by honouring
the ``Idempotency-Key`` header (docs/dialer.md). A claim is only ever given back or marked sent
by the invocation that took it (compare and set, on its owner string), so a late give-back never
takes a redelivery's claim.

Claims live on the limiter's own Redis connection, so the dialer needs no second client.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cps_limiter import Limiter

DEFAULT_PREFIX: Final = "dialer:claim"
DEFAULT_FLEET_KEY: Final = "cps:fleet"
FLEET_SECONDS: Final = 10.0
"""A container that made no claim for this long no longer counts as dialing."""
PENDING_MARGIN_SECONDS: Final = 2.0
"""How long a pending claim outlives its invocation's deadline: the round trips that mark the
last dials sent finish within it, and a redelivery (after the deadline) still finds the claim
gone soon after."""
PENDING: Final = "pending:"
SENT: Final = "sent:"

# Marks a claim sent when it is still this owner's pending claim, or has expired (the POST left:
# a redelivery must not dial). KEYS[1] the claim; ARGV[1] pending value, ARGV[2] sent value,
# ARGV[3] ttl in seconds. Reply 1 marked, 0 the claim is someone else's.
MARK_SENT_LUA: Final = """
local held = redis.call("GET", KEYS[1])
if held == false or held == ARGV[1] or held == ARGV[2] then
  redis.call("SET", KEYS[1], ARGV[2], "EX", ARGV[3])
  return 1
end
return 0
"""
# Deletes a claim only while it is this owner's pending one. KEYS[1] the claim; ARGV[1] the
# pending value. Reply 1 given back, 0 not held (never set, expired, sent, someone else's).
GIVE_BACK_LUA: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""


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


def task_identity(campaign_id: str, contact_id: str, attempts: int) -> str:
    """A digest of the task's identity, the same on every delivery: the claim's key and the
    ``Idempotency-Key`` the worker sees. Ids holding ``{``, ``*``, spaces or 10,000 characters
    can neither escape a key's prefix nor pick a Redis Cluster slot."""
    identity = json.dumps([campaign_id, contact_id, attempts], separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()


def claim_key(
    campaign_id: str, contact_id: str, attempts: int, prefix: str = DEFAULT_PREFIX
) -> str:
    return f"{prefix}:{task_identity(campaign_id, contact_id, attempts)}"


def new_owner(request_id: str) -> str:
    """Unique to one batch, which recognises its own claims by it."""
    return f"{request_id}@{time.time_ns() // 1_000_000}/{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class ClaimStore:
    """Claims, marks and give-backs, one pipelined round trip each, through the limiter's own
    client, breaker and error boundary (`Limiter.run`): a Redis failure is the same event for
    the claims as for the permits. Every method raises `BackendUnavailable` when Redis fails.

    The pipeline is not a transaction (``transaction=False``): each command stands alone, and
    on a Redis Cluster the keys of one batch may live in different slots. The claims' round trip
    also carries this container's heartbeat in ``fleet_key``: how many containers dial is what
    each one's share of the limit is while Redis is down, learned at no extra round trip.
    """

    limiter: Limiter
    ttl: int
    prefix: str = DEFAULT_PREFIX
    fleet_key: str = DEFAULT_FLEET_KEY
    pending_margin: float = PENDING_MARGIN_SECONDS
    container: str = field(default_factory=lambda: uuid.uuid4().hex)
    fleet: FleetPeak = field(default_factory=FleetPeak, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {self.ttl!r}")
        if not (math.isfinite(self.pending_margin) and self.pending_margin >= 0):
            raise ValueError(f"pending_margin must be seconds, 0 or more: {self.pending_margin!r}")

    def key(self, campaign_id: str, contact_id: str, attempts: int) -> str:
        return claim_key(campaign_id, contact_id, attempts, self.prefix)

    def pending_ms(self, lifetime: float) -> int:
        """A pending claim's life for an invocation with ``lifetime`` seconds left."""
        return max(math.ceil((lifetime + self.pending_margin) * 1000), 1)

    def claim(self, keys: Sequence[str], owner: str, lifetime: float) -> tuple[list[bool], int]:
        """Claim each key for ``owner``, pending for ``lifetime`` seconds and the margin: True
        where the claim is new, False for a repeat; and how many containers dialed within the
        last `FLEET_SECONDS`, this one included (the most heard of: see `FleetPeak`)."""
        now = time.time_ns() // 1_000_000
        window = int(FLEET_SECONDS * 1000)
        pending, life = PENDING + owner, self.pending_ms(lifetime)

        def claim_all(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, pending, nx=True, px=life)
                # Whose the claim is, read back: a round trip retried after Redis ran it (a
                # reply lost to a dead connection) finds its own claim, which is no repeat.
                pipe.get(key)
            pipe.zadd(self.fleet_key, {self.container: now})
            pipe.zremrangebyscore(self.fleet_key, "-inf", now - window)
            pipe.zcard(self.fleet_key)
            pipe.pexpire(self.fleet_key, 2 * window)
            return list(pipe.execute())

        replies = self.limiter.run(claim_all)
        mine = {pending, pending.encode()}
        holders = replies[1 : 2 * len(keys) : 2]
        # The same task twice in one batch: its first place holds the claim, the second repeats.
        seen: set[str] = set()
        fresh = []
        for key, holder in zip(keys, holders, strict=True):
            fresh.append(holder in mine and key not in seen)
            seen.add(key)
        return fresh, self.fleet.heard(max(int(replies[-2]), 1))

    def mark_sent(self, keys: Sequence[str], owner: str) -> list[bool]:
        """Turn ``owner``'s pending claims into sent ones for the idempotency TTL; False where
        the claim had become someone else's (its pending life ran out and a redelivery took it)."""
        return [bool(r) for r in self._each(MARK_SENT_LUA, keys, PENDING + owner, SENT + owner)]

    def give_back(self, keys: Sequence[str], owner: str, refused: int = 0) -> int:
        """Delete ``owner``'s pending claims, so that the redelivery may dial: how many were.
        ``refused`` (the worker's 429 and 503 replies) goes to the limit's pending refusals
        in the same round trip: a task the worker refused is always given back, and its key
        is in the ledger from before its claim's round trip, even one that failed."""
        extra = [self.limiter.refused_command(refused)] if refused else []
        replies = self._each(GIVE_BACK_LUA, keys, PENDING + owner, extra=extra)
        return sum(int(r) for r in replies[: len(keys)])

    def _each(
        self,
        script: str,
        keys: Sequence[str],
        *args: str,
        extra: Sequence[Sequence[str | int]] = (),
    ) -> list[Any]:
        if not keys and not extra:
            return []

        def each(client: Any) -> list[Any]:
            # One script per key: on a cluster a batch's keys live in different slots (and a
            # cluster pipeline refuses ``eval``, not the command itself).
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("EVAL", script, 1, key, *args, self.ttl)
            for command in extra:
                pipe.execute_command(*command)
            return list(pipe.execute())

        return self.limiter.run(each)
