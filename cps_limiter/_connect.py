"""Clients from URLs, with timeouts short enough that a stalled Redis never stalls a caller."""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.connection
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from ._errors import ConfigurationError

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
stay inside 250 ms with room for a busy interpreter (0.1 s measured 0.33 s with 150 threads)."""
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

    Neither connects here: a Redis that is down when the client is made costs fail-open
    decisions later, not an error now.
    """
    if _scheme(url) == "memory":
        import fakeredis

        return fakeredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = split_cluster_flag(url)
    if cluster:
        return _deferred_cluster_class()(url, **_options(options))
    pool = redis.BlockingConnectionPool.from_url(
        url, **_pool_options(options, DEFAULT_POOL_TIMEOUT)
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    _probe(client, url)
    return client


def _where(url: str) -> str:
    """Who connects where, for messages: never the password."""
    parts = urlsplit(url)
    user = f"user {unquote(parts.username)!r} at " if parts.username else ""
    return f"{user}{parts.hostname or parts.path}{'' if parts.port is None else f':{parts.port}'}"


def refuse_bad_credentials(url: str, error: BaseException | None) -> None:
    """Raise `ConfigurationError` if ``error`` is Redis refusing the URL's credentials.

    A wrong password does not mend itself: failing open on it for ever would hide it, so it
    fails where the client is made, with a message that names the user and host and never
    the password.
    """
    if isinstance(error, redis.AuthenticationError):
        raise ConfigurationError(
            f"Redis refused the credentials in the URL ({_where(url)}): {error}"
        ) from error


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


@functools.cache
def _deferred_cluster_class() -> type[Any]:
    """`DeferredRedisCluster`, defined on first use so that importing cps_limiter does not
    import redis.cluster."""
    from redis.cluster import RedisCluster

    class DeferredRedisCluster(RedisCluster):
        """A sync ``RedisCluster`` that may be made while no node answers.

        redis-py's sync client discovers the cluster in its constructor and raises when it
        cannot; a limiter made during an outage (a Lambda's init phase) would then fail to
        start and send every batch back to the queue. This one discovers on first use instead,
        and again on each use until discovery succeeds; meanwhile each command raises
        ``ConnectionError``, which the limiter turns into fail-open decisions and its breaker
        into cheap ones. (The asyncio ``RedisCluster`` already discovers on first use.)
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
                    if isinstance(exc.__cause__, redis.AuthenticationError):
                        raise exc.__cause__ from None
                    raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
                finally:
                    self._discovering = False
                self._discovered = True

        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            self._ensure_discovered()
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            self._ensure_discovered()
            return super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]

    return DeferredRedisCluster


def async_client(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` (or its ``RedisCluster`` with ``?cluster=true``) for ``url``.

    Credentials are checked here with one blocking PING (a wrong password raises
    `ConfigurationError`); a cluster's are checked on first use.
    """
    if _scheme(url) == "memory":
        from fakeredis import aioredis

        return aioredis.FakeRedis(server=_memory_server(urlsplit(url).netloc))
    url, cluster = split_cluster_flag(url)
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **_options(options))
    probe = redis.Redis.from_url(url, **_options(options))
    try:
        _probe(probe, url)
    finally:
        probe.close()
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, **_pool_options(options, ASYNC_POOL_TIMEOUT)
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def is_cluster(client: object) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster)
