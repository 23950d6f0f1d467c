"""A decision's EVALSHA sent on a pooled connection directly, past redis-py's command layers.

redis-py's ``execute_command`` wraps each command in a retry policy (which a limiter turns
off), observability hooks, a response-callback lookup and a fresh argument tuple: together a
fair share of a decision's time on the client. A plain ``redis.Redis`` on a pool has a faster
way with the same semantics: take a connection, send the packed command, read the reply, give
the connection back. Any other client (a cluster, memory://, a single-connection client, one
with client-side caching, or an instrumented one whose ``execute_command`` traces commands)
keeps the plain path. Errors are redis-py's own, so `_backend` translates them as before.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import weakref
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError, ResponseError

EVALSHA = "EVALSHA"
EVAL = "EVAL"


def _takes_no_command_name(pool_class: Any) -> bool:
    """Whether ``get_connection`` is called without a command name: redis-py 5.3 deprecated
    the argument, and older releases require it."""
    parameter = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    return parameter is not None and parameter.default is None


_SYNC_BARE = _takes_no_command_name(redis.ConnectionPool)
_ASYNC_BARE = _takes_no_command_name(redis.asyncio.ConnectionPool)


def _instrumented(client_class: Any) -> bool:
    """Whether a tracer wrapped the client's commands (opentelemetry-instrumentation-redis
    does, with wrapt): its spans would miss a command sent past them."""
    return hasattr(client_class.execute_command, "__wrapped__")


def direct_pool(client: object) -> Any:
    """The connection pool to send EVALSHA on directly, or None for the plain path."""
    if type(client) is redis.Redis or type(client) is redis.asyncio.Redis:
        pool = client.connection_pool
        single = getattr(client, "connection", None) is not None
        cached = getattr(pool, "cache", None) is not None
        if not single and not cached:
            return pool
    return None


class Spare:
    """The one connection a limiter keeps aside from its pool between decisions.

    Taking a connection from redis-py's pool and giving it back runs a queue and its lock, a
    poll of the socket and the pool's observability hooks: a fair share of a decision's time
    on the client. A caller that decides one decision after another reuses the spare instead;
    callers deciding at the same moment take theirs from the pool, as before.

    The spare never outlives trouble: a call that fails on its connection closes the spare
    too, as it has likely died the same way (an idle flow a NAT dropped, a restarted server),
    so that the retry opens a fresh connection; a forked child never uses its parent's.
    `give_back` gives it back to its pool, as a limiter's close does, and `dropped` as a
    limiter collected unclosed does.
    """

    __slots__ = ("__weakref__", "_kept")

    def __init__(self) -> None:
        # (pool, connection) pairs; list.pop and list.append are atomic, so threads need no
        # lock. Two threads giving back at once may both keep theirs: each is taken again.
        # The list is never replaced but in a forked child, so that no append can miss it.
        self._kept: list[tuple[Any, Any]] = []
        _SPARES.add(self)

    def take(self, pool: Any) -> Any:
        """The spare if one of ``pool``'s is kept; None when not (the caller asks the pool)."""
        try:
            owner, connection = self._kept.pop()
        except IndexError:
            return None
        if owner is pool:
            return connection
        self._kept.append((owner, connection))
        return None

    def keep(self, pool: Any, connection: Any) -> bool:
        """Keep ``connection`` as the spare; False when one is kept already (the caller gives
        it back to the pool)."""
        if self._kept:
            return False
        self._kept.append((pool, connection))
        return True

    def drain(self) -> list[tuple[Any, Any]]:
        """Every connection kept, no longer kept: the caller closes them or gives them back."""
        drained = []
        # Pop by pop rather than swapping the list: a thread keeping its connection at the
        # same moment would append to the list swapped out, and that connection would never
        # go back to its pool.
        while self._kept:
            try:
                drained.append(self._kept.pop())
            except IndexError:
                break
        return drained

    def give_back(self) -> None:
        """Give a sync spare back to its pool."""
        for pool, connection in self.drain():
            pool.release(connection)

    async def agive_back(self) -> None:
        """Give an asyncio spare back to its pool."""
        for pool, connection in self.drain():
            await pool.release(connection)

    def dropped(self) -> None:
        """Give the spare back for a limiter collected without being closed: limiters made per
        request on a shared client would otherwise each keep a connection out of its pool.

        An asyncio pool gives back in a coroutine, run on this thread's loop; with no loop
        running here, the connection's own loop is gone or elsewhere, and nothing is safe to
        do with it."""
        for pool, connection in self.drain():
            if not isinstance(pool, redis.asyncio.ConnectionPool):
                pool.release(connection)
                continue
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                continue
            task = loop.create_task(pool.release(connection))
            _GIVING_BACK.add(task)
            task.add_done_callback(_GIVING_BACK.discard)

    def close(self) -> None:
        """Close a sync spare and give it back: it has likely died as the one that failed."""
        for pool, connection in self.drain():
            connection.disconnect()
            pool.release(connection)

    async def aclose(self) -> None:
        """As `close`, for an asyncio spare."""
        for pool, connection in self.drain():
            await connection.disconnect(nowait=True)
            await pool.release(connection)

    def _forget(self) -> None:
        self._kept = []


_SPARES: weakref.WeakSet[Spare] = weakref.WeakSet()
_GIVING_BACK: set[asyncio.Task[None]] = set()
"""The asyncio give-backs of dropped limiters under way: the loop keeps only weak references
to its tasks."""


def _forget_spares() -> None:
    # The parent's sockets: neither ours to use nor to close (redis-py's pools reset
    # themselves in a child and would never see these connections again).
    for spare in list(_SPARES):
        spare._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spares)


def evalsha(
    client: Any, pool: Any, arguments: tuple[str | int, ...], spare: Spare | None, source: str
) -> Any:
    """The raw reply of EVALSHA ``arguments`` (sha first), or redis-py's error; the script is
    ``source``, which Redis is sent once more when it has lost the script. On ``spare`` or a
    connection of ``pool`` (from `direct_pool`) when there is one, else through redis-py."""
    if spare is None or pool is None or _instrumented(type(client)):
        try:
            return client.evalsha(*arguments)
        except NoScriptError:
            return client.eval(source, *arguments[1:])
    connection = spare.take(pool)
    if connection is None:
        connection = pool.get_connection() if _SYNC_BARE else pool.get_connection(EVALSHA)
    try:
        try:
            connection.send_packed_command(connection.pack_command(EVALSHA, *arguments))
            reply = connection.read_response()
        except NoScriptError:
            # On the connection in hand: with a pool of one, no other would come free.
            connection.send_packed_command(connection.pack_command(EVAL, source, *arguments[1:]))
            reply = connection.read_response()
    except ResponseError:
        # A whole error reply was read: the connection is in step and goes back as it is.
        _keep_or_give_back(spare, pool, connection)
        raise
    except BaseException:
        # Anything else may have left a reply unread, or half a command sent.
        connection.disconnect()
        pool.release(connection)
        spare.close()
        raise
    _keep_or_give_back(spare, pool, connection)
    return reply


def _keep_or_give_back(spare: Spare, pool: Any, connection: Any) -> None:
    if not spare.keep(pool, connection):
        pool.release(connection)


async def aevalsha(
    client: Any, pool: Any, arguments: tuple[str | int, ...], spare: Spare | None, source: str
) -> Any:
    """As `evalsha`, on an asyncio client; a cancelled call disconnects its connection."""
    if spare is None or pool is None or _instrumented(type(client)):
        try:
            return await client.evalsha(*arguments)
        except NoScriptError:
            return await client.eval(source, *arguments[1:])
    connection = spare.take(pool)
    if connection is None:
        connection = await (pool.get_connection() if _ASYNC_BARE else pool.get_connection(EVALSHA))
    try:
        try:
            await connection.send_packed_command(connection.pack_command(EVALSHA, *arguments))
            reply = await connection.read_response()
        except NoScriptError:
            await connection.send_packed_command(
                connection.pack_command(EVAL, source, *arguments[1:])
            )
            reply = await connection.read_response()
    except ResponseError:
        await _akeep_or_give_back(spare, pool, connection)
        raise
    except BaseException:
        await connection.disconnect(nowait=True)
        await pool.release(connection)
        await spare.aclose()
        raise
    await _akeep_or_give_back(spare, pool, connection)
    return reply


async def _akeep_or_give_back(spare: Spare, pool: Any, connection: Any) -> None:
    if not spare.keep(pool, connection):
        await pool.release(connection)
