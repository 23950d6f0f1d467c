"""`CallEnds`: the stub's calls last ``call_seconds``, and each one's end frees its campaign's
concurrency lease the way docs/dialer.md tells the Node worker to: one
``ZREM <prefix>:campaign:<campaignId>:leases <callId>``."""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from typing import Any, Final

import redis

from ._background import RedisThread

DEFAULT_PREFIX: Final = "cps"


def lease_key(prefix: str, campaign_id: str, cluster: bool = False) -> str:
    """The dialer's lease set of a campaign (on a cluster the prefix is a hash tag)."""
    base = f"{{{prefix}}}" if cluster else prefix
    return f"{base}:campaign:{campaign_id}:leases"


def client_from_url(url: str) -> Any:
    """A Redis client for the stub's own commands; ``?cluster=true`` names a cluster."""
    if "cluster=true" in url:
        return redis.RedisCluster.from_url(url.replace("?cluster=true", ""))
    return redis.Redis.from_url(url)


class CallEnds(RedisThread):
    """Ends each answered call ``call_seconds`` after it was answered, in one thread, and
    releases its lease. A call whose campaign has no lease is released all the same: ZREM of a
    member that is not there does nothing, as for the worker."""

    def __init__(self, client: Any, call_seconds: float, prefix: str = DEFAULT_PREFIX) -> None:
        if not call_seconds >= 0:
            raise ValueError(f"call_seconds must be >= 0, got {call_seconds!r}")
        super().__init__(client, "stub-call-ends")
        self._seconds = call_seconds
        self._prefix = prefix
        self._cluster = isinstance(client, redis.RedisCluster)
        self._due: list[tuple[float, str, str]] = []
        self._busy = False
        self.released = 0
        self._start()

    @classmethod
    def from_url(cls, url: str, call_seconds: float, prefix: str = DEFAULT_PREFIX) -> CallEnds:
        ends = cls(client_from_url(url), call_seconds, prefix)
        ends._owns_client = True
        return ends

    def answered(self, body: Mapping[str, object], ends_in: float | None = None) -> None:
        """A call was answered: it ends ``ends_in`` seconds from now (``call_seconds`` when
        not given)."""
        call_id, campaign_id = body.get("callId"), body.get("campaignId")
        if not isinstance(call_id, str) or not isinstance(campaign_id, str):
            return
        with self._wake:
            seconds = self._seconds if ends_in is None else ends_in
            heapq.heappush(self._due, (time.monotonic() + seconds, campaign_id, call_id))
            self._wake.notify()

    def in_progress(self) -> int:
        with self._wake:
            return len(self._due)

    def wait_idle(self) -> None:
        """Return once every call answered so far has ended and been released."""
        with self._wake:
            while self._due or self._busy:
                self._wake.wait()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                _, campaign_id, call_id = heapq.heappop(self._due)
                self._busy = True
            try:
                key = lease_key(self._prefix, campaign_id, self._cluster)
                self.released += int(self._client.zrem(key, call_id))
            except redis.RedisError:
                # As for the worker: a lease not released expires after CALL_MAX_SECONDS.
                self.errors += 1
            with self._wake:
                self._busy = False
                self._wake.notify_all()
