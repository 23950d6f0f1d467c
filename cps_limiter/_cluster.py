"""Redis Cluster clients that may be made while no node answers, and that fail like any outage.

Both classes are defined on first use, so that importing cps_limiter does not import
redis.cluster.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, NoReturn

import redis
from redis.exceptions import RedisClusterException

from ._credentials import refuse_bad_credentials


def _raise_translated(error: RedisClusterException) -> NoReturn:
    """Raise what a failed discovery means: the credentials refused, or no node answering.

    redis-py raises ``RedisClusterException``, which is no ``RedisError``, when no node answers
    (the whole cluster down); it is a ``ConnectionError`` here, so that it fails open like any
    outage instead of escaping the limiter.
    """
    if isinstance(error.__cause__, redis.AuthenticationError):
        raise error.__cause__ from None
    raise redis.ConnectionError(f"Redis Cluster unreachable: {error}") from error


@functools.cache
def deferred_cluster_class() -> type[Any]:
    """`DeferredRedisCluster`, the sync cluster client of ``?cluster=true`` URLs."""
    from redis.cluster import RedisCluster

    class DeferredRedisCluster(RedisCluster):
        """A sync ``RedisCluster`` that may be made while no node answers.

        redis-py's sync client discovers the cluster in its constructor and raises when it
        cannot; a limiter made during an outage (a Lambda's init phase) would then fail to
        start and send every batch back to the queue. This one discovers on first use instead,
        and again on each use until discovery succeeds; meanwhile each command raises
        ``ConnectionError``, which the limiter turns into fail-open decisions and its breaker
        into cheap ones. (The asyncio ``RedisCluster`` already discovers on first use.)

        A command that failed because its master is gone is sent once more when the refreshed
        slot map names a new master: decisions are exact again as soon as a failover is done.
        """

        def __init__(self, url: str, **options: Any) -> None:
            self._deferred = (url, options)
            # Reentrant: discovery itself sends commands (COMMAND) through execute_command.
            self._discovery = threading.RLock()
            self._discovered = False
            self._discovering = False
            try:
                self._ensure_discovered()
            except redis.AuthenticationError as exc:
                refuse_bad_credentials(url, exc)
            except redis.ConnectionError:
                pass  # unreachable now: commands fail (and decisions fail open) until it is not

        def _ensure_discovered(self) -> None:
            if self._discovered:
                return
            with self._discovery:
                if self._discovered or self._discovering:
                    return
                self._discovering = True
                url, options = self._deferred
                try:
                    super().__init__(url=url, **options)
                except RedisClusterException as exc:
                    _raise_translated(exc)
                finally:
                    self._discovering = False
                self._discovered = True

        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            self._ensure_discovered()
            owner = self._owner(args)
            try:
                try:
                    return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
                except (redis.ConnectionError, redis.TimeoutError):
                    if owner is None or self._owner(args) in (None, owner):
                        raise
                    # redis-py refreshed the slot map on the error and the slot has a new master
                    # (a failover): the command never reached that one, so it goes there now
                    # rather than failing until the breaker's next probe.
                    return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
            except RedisClusterException as exc:
                _raise_translated(exc)

        def _owner(self, args: tuple[Any, ...]) -> str | None:
            """The master that serves the command's keys now, if it has any."""
            if not self._discovered:
                return None  # the commands of discovery itself
            if args and str(args[0]).upper() in self.command_flags:
                # Sent by node flag (SCRIPT LOAD to every primary): no keys, no one owner. Asking
                # redis-py's key parser anyway dies in it before 7.1 (range() arg 3 is zero).
                return None
            try:
                slot = self.determine_slot(*args)
                if slot is None:
                    return None
                return str(self.nodes_manager.get_node_from_slot(slot).name)
            except (RedisClusterException, redis.RedisError, LookupError, TypeError, ValueError):
                return None

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            self._ensure_discovered()
            return super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]

    return DeferredRedisCluster


@functools.cache
def async_cluster_class() -> type[Any]:
    """`DiscoveringAsyncRedisCluster`, the asyncio cluster client of ``?cluster=true`` URLs."""
    from redis.asyncio.cluster import RedisCluster

    class DiscoveringAsyncRedisCluster(RedisCluster):
        """The asyncio ``RedisCluster``, made safe for concurrent first commands and outages.

        redis-py resolves a command's routing policy (asking a node) before its own lazy
        discovery, and the discovery then closes the connections those commands use: a burst
        of first commands failed with "Connection closed by server". Retrying them could run
        a script twice (a permit counted and not granted), so discovery comes first instead.
        A failed discovery raises as in the sync `DeferredRedisCluster`: the refused
        credentials, or ``ConnectionError``.
        """

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            try:
                if self._initialize:
                    await self.initialize()
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                _raise_translated(exc)

    return DiscoveringAsyncRedisCluster
