"""Credentials that Redis refuses: a wrong password does not mend itself.

Failing open on it for ever would hide it, so it is a `ConfigurationError` where it is first
met, with a message that names the user and host and never the password.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis

from ._errors import ConfigurationError


def where(url: str) -> str:
    """Who connects where, for messages: never the password."""
    parts = urlsplit(url)
    user = f"user {unquote(parts.username)!r} at " if parts.username else ""
    return f"{user}{parts.hostname or parts.path}{'' if parts.port is None else f':{parts.port}'}"


def refused(place: str, error: BaseException) -> ConfigurationError:
    """The error for Redis refusing the credentials of the client described by ``place``."""
    return ConfigurationError(f"Redis refused the credentials in the URL ({place}): {error}")


def refuse_bad_credentials(url: str, error: BaseException | None) -> None:
    """Raise `ConfigurationError` if ``error`` is Redis refusing the URL's credentials."""
    if isinstance(error, redis.AuthenticationError):
        raise refused(where(url), error) from error
