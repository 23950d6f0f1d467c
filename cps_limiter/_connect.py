"""Clients from URLs, with timeouts short enough that a stalled Redis never stalls a caller."""

from __future__ import annotations

import functools
import inspect
import socket
import ssl
import threading
from dataclasses import dataclass, field
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
    options = _tls_options(url, options, SharedContextSSLConnection)
    pool = redis.BlockingConnectionPool.from_url(
        url, **_pool_options(options, DEFAULT_POOL_TIMEOUT)
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    _probe(client, url)
    return client


@dataclass(frozen=True, slots=True)
class _TlsSettings:
    """What an SSL connection's context is made of; connections with equal settings share one
    context (an ``SSLContext`` is safe to share between threads)."""

    check_hostname: bool
    cert_reqs: Any
    include_verify_flags: tuple[Any, ...]
    exclude_verify_flags: tuple[Any, ...]
    certfile: Any
    keyfile: Any
    password: Any = field(repr=False)  # the client key's passphrase
    ca_certs: Any
    ca_path: Any
    ca_data: Any
    min_version: Any
    ciphers: Any


@functools.lru_cache(maxsize=16)
def _shared_ssl_context(settings: _TlsSettings) -> ssl.SSLContext:
    """The context redis-py would make, made once: redis-py makes a new one per connection,
    and ``ssl.create_default_context()`` reads the system's CA store each time (about 25 ms,
    holding the interpreter), so 64 connections opened at once took 1.4 s over TLS."""
    context = ssl.create_default_context()
    context.check_hostname = settings.check_hostname
    context.verify_mode = settings.cert_reqs
    for flag in settings.include_verify_flags:
        context.verify_flags |= flag
    for flag in settings.exclude_verify_flags:
        context.verify_flags &= ~flag
    if settings.certfile or settings.keyfile:
        context.load_cert_chain(settings.certfile, settings.keyfile, settings.password)
    if settings.ca_certs or settings.ca_path or settings.ca_data:
        context.load_verify_locations(settings.ca_certs, settings.ca_path, settings.ca_data)
    if settings.min_version is not None:
        context.minimum_version = settings.min_version
    if settings.ciphers:
        context.set_ciphers(settings.ciphers)
    return context


class SharedContextSSLConnection(redis.SSLConnection):
    """redis-py's ``SSLConnection`` with one SSL context per set of settings (see
    `_shared_ssl_context`); OCSP checks, which need more than a context, are left to it."""

    def _wrap_socket_with_ssl(self, sock: socket.socket) -> ssl.SSLSocket:
        if getattr(self, "ssl_validate_ocsp", False) or getattr(
            self, "ssl_validate_ocsp_stapled", False
        ):
            wrapped: ssl.SSLSocket = super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
            return wrapped
        settings = _TlsSettings(
            check_hostname=self.check_hostname,
            cert_reqs=self.cert_reqs,
            include_verify_flags=tuple(getattr(self, "ssl_include_verify_flags", None) or ()),
            exclude_verify_flags=tuple(getattr(self, "ssl_exclude_verify_flags", None) or ()),
            certfile=self.certfile,
            keyfile=self.keyfile,
            password=self.certificate_password,
            ca_certs=self.ca_certs,
            ca_path=getattr(self, "ca_path", None),
            ca_data=getattr(self, "ca_data", None),
            min_version=getattr(self, "ssl_min_version", None),
            ciphers=getattr(self, "ssl_ciphers", None),
        )
        return _shared_ssl_context(settings).wrap_socket(sock, server_hostname=self.host)


class SharedContextAsyncSSLConnection(redis.asyncio.SSLConnection):
    """The asyncio ``SSLConnection`` with a shared context; redis-py would make one per
    connection, inside the event loop, blocking it for each."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        made = self.ssl_context
        settings = _TlsSettings(
            check_hostname=made.check_hostname,
            cert_reqs=made.cert_reqs,
            include_verify_flags=tuple(getattr(made, "include_verify_flags", None) or ()),
            exclude_verify_flags=tuple(getattr(made, "exclude_verify_flags", None) or ()),
            certfile=made.certfile,
            keyfile=made.keyfile,
            password=getattr(made, "password", None),
            ca_certs=made.ca_certs,
            ca_path=getattr(made, "ca_path", None),
            ca_data=getattr(made, "ca_data", None),
            min_version=getattr(made, "min_version", None),
            ciphers=getattr(made, "ciphers", None),
        )
        made.context = _shared_ssl_context(settings)


def _tls_options(url: str, options: dict[str, Any], connection_class: type[Any]) -> dict[str, Any]:
    if urlsplit(url).scheme != "rediss" or "connection_class" in options:
        return options
    return {**options, "connection_class": connection_class}


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


def _unreachable(error: RedisClusterException) -> redis.ConnectionError:
    return redis.ConnectionError(f"Redis Cluster unreachable: {error}")


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

        redis-py also raises ``RedisClusterException``, which is no ``RedisError``, when no
        node answers a rediscovery (the whole cluster down); it is a ``ConnectionError`` here
        too, so that it fails open like any outage instead of escaping the limiter. And a
        command that failed because its master is gone is sent once more when the refreshed
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
                    if isinstance(exc.__cause__, redis.AuthenticationError):
                        raise exc.__cause__ from None
                    raise _unreachable(exc) from exc
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
                raise _unreachable(exc) from exc

        def _owner(self, args: tuple[Any, ...]) -> str | None:
            """The master that serves the command's keys now, if it has any."""
            if not self._discovered:
                return None  # the commands of discovery itself
            try:
                slot = self.determine_slot(*args)
                if slot is None:
                    return None
                return str(self.nodes_manager.get_node_from_slot(slot).name)
            except (RedisClusterException, redis.RedisError, LookupError, TypeError):
                return None

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            self._ensure_discovered()
            return super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]

    return DeferredRedisCluster


@functools.cache
def _async_cluster_class() -> type[Any]:
    """`DiscoveringAsyncRedisCluster`, defined on first use."""
    from redis.asyncio.cluster import RedisCluster

    class DiscoveringAsyncRedisCluster(RedisCluster):
        """The asyncio ``RedisCluster``, made safe for concurrent first commands and outages.

        redis-py resolves a command's routing policy (asking a node) before its own lazy
        discovery, and the discovery then closes the connections those commands use: a burst
        of first commands failed with "Connection closed by server". Retrying them could run
        a script twice (a permit counted and not granted), so discovery comes first instead.
        As in the sync `DeferredRedisCluster`, ``RedisClusterException`` (no node answers)
        is raised as ``ConnectionError``.
        """

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            try:
                if self._initialize:
                    await self.initialize()
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                raise _unreachable(exc) from exc

    return DiscoveringAsyncRedisCluster


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
        from redis.asyncio.retry import Retry as AsyncRetry

        # The sync Retry of _options would be ignored; the asyncio client needs its own.
        retry = AsyncRetry(NoBackoff(), 0)
        return _async_cluster_class().from_url(url, **{**_options(options), "retry": retry})
    probe = redis.Redis.from_url(
        url, **_options(_tls_options(url, options, SharedContextSSLConnection))
    )
    try:
        _probe(probe, url)
    finally:
        probe.close()
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
