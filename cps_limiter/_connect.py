"""Clients from URLs, with timeouts short enough that a stalled Redis never stalls a caller."""

from __future__ import annotations

import inspect
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._errors import ConfigurationError

DEFAULT_CONNECT_TIMEOUT = 0.1
"""Seconds to open a connection to Redis."""
DEFAULT_SOCKET_TIMEOUT = 0.1
"""Seconds to wait for Redis to answer one command."""
DEFAULT_MAX_CONNECTIONS = 64
"""Connections per client; callers beyond them wait for one rather than opening more."""
DEFAULT_POOL_TIMEOUT = 0.1
"""Seconds a caller waits for a free connection before the decision fails."""

SCHEMES = ("redis", "rediss", "unix", "memory")
_TRUE = {"1", "true", "yes", "on"}

# CLIENT SETINFO costs two round trips per new connection: under a burst of new connections
# they alone can exceed the connect timeout. redis-py 8 turns it off with driver_info=None,
# older releases with lib_name=None.
_NO_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _memory_server(name: str) -> Any:
    """The process-wide in-memory server called ``name``: every memory:// client shares it."""
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis runs Lua scripts with it)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError(
            "memory:// needs fakeredis with Lua: pip install 'cps-limiter[memory]'"
        ) from exc
    with _memory_lock:
        if name not in _memory_servers:
            _memory_servers[name] = fakeredis.FakeServer()
        return _memory_servers[name]


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """Remove ``cluster=true`` from the query string of ``url``, and say whether it was there."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "cluster" for k, _ in query):
        return url, False
    cluster = any(k == "cluster" and v.lower() in _TRUE for k, v in query)
    rest = [(k, v) for k, v in query if k != "cluster"]
    return urlunsplit(parts._replace(query=urlencode(rest))), cluster


def _scheme(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"url must start with one of {', '.join(s + '://' for s in SCHEMES)}; "
            f"got scheme {scheme or '(none)'!r}"
        )
    return scheme


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        # No retries: one decision must fit in its time bound, and the breaker handles outages.
        "retry": Retry(NoBackoff(), 0),
        **_NO_SETINFO,
        **options,
    }


def _pool_options(options: dict[str, Any]) -> dict[str, Any]:
    # A blocking pool queues a burst of callers on a bounded set of connections instead of
    # opening one socket per caller at once.
    return {
        "max_connections": DEFAULT_MAX_CONNECTIONS,
        "timeout": DEFAULT_POOL_TIMEOUT,
        **_options(options),
    }


def sync_client(url: str, **options: Any) -> Any:
    """A ``redis.Redis`` (or ``RedisCluster`` with ``?cluster=true``) for ``url``."""
    if _scheme(url) == "memory":
        import fakeredis

        return fakeredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = split_cluster_flag(url)
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **_options(options))
    pool = redis.BlockingConnectionPool.from_url(url, **_pool_options(options))
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def async_client(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` (or its ``RedisCluster`` with ``?cluster=true``) for ``url``."""
    if _scheme(url) == "memory":
        from fakeredis import aioredis

        return aioredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = split_cluster_flag(url)
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **_options(options))
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, **_pool_options(options))
    client = redis.asyncio.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def is_cluster(client: object) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster)
