"""TLS connections that share one SSL context per set of settings."""

from __future__ import annotations

import functools
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio


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
    and ``ssl.create_default_context()`` reads the system's CA store each time, holding the
    interpreter, so a burst of new TLS connections queued behind it."""
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


def tls_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the shared-context connection class for a ``rediss://`` URL."""
    if urlsplit(url).scheme != "rediss" or "connection_class" in options:
        return options
    return {**options, "connection_class": SharedContextSSLConnection}
