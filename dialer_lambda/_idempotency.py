"""Claims that make a dial happen at most once per (campaignId, contactId, attempts).

A pipe redelivers a batch whenever a Lambda fails, times out or reports partial failures, and
a task can sit in two batches at once: the claim, taken before the dial with ``SET NX EX``, is
what keeps a person from being called twice. It lives on the limiter's own Redis connection, so
the dialer needs no second client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisClusterException, RedisError

DEFAULT_PREFIX: Final = "dialer:claim"
# Everything that means "Redis did not answer", as the limiter counts it.
# RedisClusterException is not a RedisError: a cluster with every node down raises it.
BACKEND_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)


def claim_key(
    campaign_id: str, contact_id: str, attempts: int, prefix: str = DEFAULT_PREFIX
) -> str:
    """The claim's key: a digest, so that ids holding ``{``, ``*``, spaces or 10,000 characters
    can neither escape the prefix nor pick a Redis Cluster slot."""
    identity = json.dumps([campaign_id, contact_id, attempts], separators=(",", ":"))
    return f"{prefix}:{hashlib.sha256(identity.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class ClaimStore:
    """Batch claims and releases, one pipelined round trip each.

    The pipeline is not a transaction (``transaction=False``): each ``SET NX`` stands alone, and
    on a Redis Cluster the keys of one batch may live in different slots.
    """

    client: Any
    ttl: int
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {self.ttl!r}")

    def key(self, campaign_id: str, contact_id: str, attempts: int) -> str:
        return claim_key(campaign_id, contact_id, attempts, self.prefix)

    def claim(self, keys: Sequence[str], owner: str) -> list[bool]:
        """Claim each key for ``owner``; True where the claim is new, False for a repeat.

        Raises one of `BACKEND_ERRORS` when Redis cannot be reached: the caller decides whether
        to fail open.
        """
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, owner, nx=True, ex=self.ttl)
        return [bool(reply) for reply in pipe.execute()]

    def release(self, keys: Sequence[str]) -> None:
        """Give up claims whose dial surely never reached the worker, so a retry may dial.

        A plain DEL, not compare-and-delete: a claim outlives a Lambda's 15 minutes by hours,
        so the key deleted here is the one this invocation set. Raises like `claim`.
        """
        if not keys:
            return
        # One DEL per key in a pipeline: a multi-key DEL fails across cluster slots.
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        pipe.execute()
