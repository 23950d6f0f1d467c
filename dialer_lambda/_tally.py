"""The calls this fleet sent in a second, for a strategy whose decisions do not say it.

A window's decisions carry their count (limit less remaining: what ``GET cps:<ts>`` shows).
A token bucket keeps only the moment of its next permit, so its limit less remaining reads
about the limit whatever the traffic; under it the batch adds its calls to the seed's
``cps:<unix_ts>`` counters itself, in one pipelined round trip after its dials, and the
metric reads them back.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cps_limiter import BackendUnavailable, Limiter, TokenBucket

TALLY_TTL_SECONDS = 2
"""A second's counter outlives it by one second, as the fixed window's do."""


def counts_in_decisions(limiter: Limiter) -> bool:
    return not isinstance(limiter.strategy, TokenBucket)


def tallied(limiter: Limiter, prefix: str, sent_seconds: list[int]) -> list[int]:
    """Each second's count of calls sent, this batch's included; empty when nothing was sent
    or Redis did not answer (the metric is no reason to fail a batch)."""
    per_second = Counter(sent_seconds)
    if not per_second:
        return []

    def add(client: Any) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for second, calls in per_second.items():
            pipe.incrby(f"{prefix}:{second}", calls)
            pipe.expire(f"{prefix}:{second}", TALLY_TTL_SECONDS)
        return list(pipe.execute())

    try:
        replies = limiter.run(add)
    except BackendUnavailable:
        return []
    return [int(count) for count in replies[::2]]
