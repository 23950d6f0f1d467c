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

import inspect
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ResponseError

EVALSHA = "EVALSHA"


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


def evalsha(client: Any, pool: Any, evalsha_args: tuple[str | int, ...]) -> Any:
    """EVALSHA's raw reply, on a connection of ``pool`` (from `direct_pool`) when there is one,
    or redis-py's error."""
    if pool is None or _instrumented(type(client)):
        return client.evalsha(*evalsha_args)
    connection = pool.get_connection() if _SYNC_BARE else pool.get_connection(EVALSHA)
    try:
        connection.send_packed_command(connection.pack_command(EVALSHA, *evalsha_args))
        return connection.read_response()
    except ResponseError:
        # A whole error reply was read: the connection is in step and goes back as it is.
        raise
    except BaseException:
        # Anything else may have left a reply unread, or half a command sent.
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


async def aevalsha(client: Any, pool: Any, evalsha_args: tuple[str | int, ...]) -> Any:
    """As `evalsha`, on an asyncio client; a cancelled call disconnects its connection."""
    if pool is None or _instrumented(type(client)):
        return await client.evalsha(*evalsha_args)
    connection = await (pool.get_connection() if _ASYNC_BARE else pool.get_connection(EVALSHA))
    try:
        await connection.send_packed_command(connection.pack_command(EVALSHA, *evalsha_args))
        return await connection.read_response()
    except ResponseError:
        raise
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
