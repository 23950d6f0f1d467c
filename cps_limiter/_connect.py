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

from ._cluster import async_cluster_class, deferred_cluster_class
from ._credentials import refuse_bad_credentials
from ._errors import ConfigurationError
from ._tls import SharedContextAsyncSSLConnection, tls_options

DEFAULT_CONNECT_TIMEOUT = 0.1
"""Seconds to open a connection to Redis."""
DEFAULT_SOCKET_TIMEOUT = 0.1
"""Seconds to wait for Redis to answer one command."""
DEFAULT_MAX_CONNECTIONS = 64
"""Connections per client; callers beyond them wait for one rather than opening more."""
DEFAULT_POOL_TIMEOUT = 0.05
"""Seconds a sync caller waits for a free connection before the decision fails. With more
callers than connections and a stalled Redis, a caller may wait this long and then meet the
read timeout on the connection it got, and nothing else bounds a sync decision: the two must
stay inside 250 ms with room for a busy interpreter."""
ASYNC_POOL_TIMEOUT = 0.1
"""The same for asyncio clients, whose decisions also have a deadline of their own (the
limiter's ``decision_timeout``): a cold burst of coroutines gets the time to open connections."""

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


def _split_cluster_flag(url: str) -> tuple[str, bool]:
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


def is_memory(url: object) -> bool:
    return _scheme(url) == "memory"


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        # No retries: one decision must fit in its time bound, and the breaker handles outages.
        "retry": Retry(NoBackoff(), 0),
        **_NO_SETINFO,
        **options,
    }


def _pool_options(options: dict[str, Any], pool_timeout: float) -> dict[str, Any]:
    # A blocking pool queues a burst of callers on a bounded set of connections instead of
    # opening one socket per caller at once.
    return {
        "max_connections": DEFAULT_MAX_CONNECTIONS,
        "timeout": pool_timeout,
        **_options(options),
    }


def sync_client(url: str, **options: Any) -> Any:
    """A ``redis.Redis`` (or ``RedisCluster`` with ``?cluster=true``) for ``url``.

    Credentials are checked here, with one PING (a cluster's by its discovery): a wrong
    password raises `ConfigurationError`. A Redis that is down now is no error: it costs
    fail-open decisions later.
    """
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = _split_cluster_flag(url)
    if cluster:
        return deferred_cluster_class()(url, **_options(options))
    pool = redis.BlockingConnectionPool.from_url(
        url, **_pool_options(tls_options(url, options), DEFAULT_POOL_TIMEOUT)
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    _probe(client, url)
    return client


def _probe(client: redis.Redis, url: str) -> None:
    """One PING at start, for credentials only: a Redis that is down or slow now is left to
    the fail-open decisions (and costs at most the connect and read timeouts here)."""
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        client.close()
        refuse_bad_credentials(url, exc)
    except (redis.RedisError, OSError):
        pass


def async_client(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` (or its ``RedisCluster`` with ``?cluster=true``) for ``url``.

    Nothing is sent here, since this is usually called inside a coroutine, where a blocking
    PING would stall the event loop: the credentials are checked by the limiter's first
    answer from Redis instead.
    """
    if is_memory(url):
        from fakeredis import aioredis

        return aioredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = _split_cluster_flag(url)
    if cluster:
        from redis.asyncio.retry import Retry as AsyncRetry

        # The sync Retry of _options would be ignored; the asyncio client needs its own.
        retry = AsyncRetry(NoBackoff(), 0)
        return async_cluster_class().from_url(url, **{**_options(options), "retry": retry})
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, **_pool_options(options, ASYNC_POOL_TIMEOUT)
    )
    if pool.connection_class is redis.asyncio.SSLConnection:
        # The asyncio pool's from_url lets the URL's scheme pick the class over an option.
        pool.connection_class = SharedContextAsyncSSLConnection
    client = redis.asyncio.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def is_cluster(client: object) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster)
