"""Settings read from the environment once per container, each checked with a message naming it.

A bad value fails the container at start (the Lambda init phase), where it is seen at once,
rather than on every invocation or, worse, half-way through a batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast
from urllib.parse import SplitResult, urlsplit

from cps_limiter import ConfigurationError

Strategy = Literal["paced", "fixed", "sliding", "token"]
FailMode = Literal["bounded", "open", "closed"]

STRATEGIES: Final[tuple[Strategy, ...]] = ("paced", "fixed", "sliding", "token")
FAIL_MODES: Final[tuple[FailMode, ...]] = ("bounded", "open", "closed")
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix", "memory"})
WORKER_SCHEMES: Final = frozenset({"http", "https"})

DEFAULT_REDIS_HOST = "localhost"
DEFAULT_REDIS_PORT = 6379
DEFAULT_NODE_WORKER_URL = "http://localhost:3000"
DEFAULT_MAX_CPS = 100
DEFAULT_STRATEGY: Strategy = "paced"
DEFAULT_FAIL_MODE: FailMode = "bounded"
# Containers assumed to share MAX_CPS by one that has never reached Redis (and so never learned
# how many there are) while Redis is down: too many only slows the outage, too few overshoots.
DEFAULT_FALLBACK_CONTAINERS = 10
DEFAULT_DIAL_TIMEOUT_SECONDS = 5.0
# Long enough to pace a batch of 10 into the next second or two at low limits, short enough that
# a Lambda stuck behind a saturated limit hands its tasks back to the queue instead of idling.
DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS = 2.0
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86_400
# How long a campaign's concurrency lease lives when the worker never releases it (a crash): one
# hour, longer than any call an IVR campaign places, so that a lease never ends while its call
# goes on, yet a lost release frees its slot the same hour.
DEFAULT_CALL_MAX_SECONDS = 3600.0
# Leases only when the operator says the worker frees them: the seed's worker frees nothing, and
# a lease nobody frees holds its campaign's slot for CALL_MAX_SECONDS (docs/dialer.md).
DEFAULT_WORKER_FREES_LEASES = False
DEFAULT_CPS_KEY_PREFIX = "cps"
DEFAULT_IDEMPOTENCY_KEY_PREFIX = "dialer:claim"
DEFAULT_SERVICE_NAME = "dialer-worker"
DEFAULT_LOG_LEVEL = "INFO"
MAX_PORT = 65_535
# Key prefixes: letters, digits and ":_.-" only, so no prefix can carry a cluster hash tag,
# a glob character or whitespace into a key.
_KEY_PREFIX = re.compile(r"[A-Za-z0-9:_.-]{1,100}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the dialer reads from its environment.

    ``redis_url`` may hold a password, so it is left out of ``repr``.
    """

    redis_url: str = field(
        default=f"redis://{DEFAULT_REDIS_HOST}:{DEFAULT_REDIS_PORT}/0", repr=False
    )
    node_worker_url: str = DEFAULT_NODE_WORKER_URL
    max_cps: int = DEFAULT_MAX_CPS
    strategy: Strategy = DEFAULT_STRATEGY
    fail_mode: FailMode = DEFAULT_FAIL_MODE
    fallback_containers: int = DEFAULT_FALLBACK_CONTAINERS
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT_SECONDS
    rate_limit_max_wait: float = DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS
    call_max_seconds: float = DEFAULT_CALL_MAX_SECONDS
    worker_frees_leases: bool = DEFAULT_WORKER_FREES_LEASES
    cps_key_prefix: str = DEFAULT_CPS_KEY_PREFIX
    idempotency_key_prefix: str = DEFAULT_IDEMPOTENCY_KEY_PREFIX
    service_name: str = DEFAULT_SERVICE_NAME
    log_level: str = DEFAULT_LOG_LEVEL

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url, "REDIS_URL")
        _check_worker_url(self.node_worker_url)
        if self.max_cps <= 0:
            raise ConfigurationError(f"MAX_CPS must be a positive integer, got {self.max_cps}")
        if self.strategy not in STRATEGIES:
            raise ConfigurationError(f"CPS_STRATEGY must be one of {', '.join(STRATEGIES)}")
        if self.fail_mode not in FAIL_MODES:
            raise ConfigurationError(f"CPS_FAIL_MODE must be one of {', '.join(FAIL_MODES)}")
        if self.fallback_containers <= 0:
            raise ConfigurationError(
                "CPS_FALLBACK_CONTAINERS must be a positive integer, "
                f"got {self.fallback_containers}"
            )
        if not (math.isfinite(self.dial_timeout) and self.dial_timeout > 0):
            raise ConfigurationError("DIAL_TIMEOUT_SECONDS must be a positive number of seconds")
        if not (math.isfinite(self.rate_limit_max_wait) and self.rate_limit_max_wait >= 0):
            raise ConfigurationError(
                "RATE_LIMIT_MAX_WAIT_SECONDS must be a number of seconds, 0 or more"
            )
        if self.idempotency_ttl <= 0:
            raise ConfigurationError("IDEMPOTENCY_TTL_SECONDS must be a positive integer")
        if not (math.isfinite(self.call_max_seconds) and self.call_max_seconds >= 0.001):
            raise ConfigurationError("CALL_MAX_SECONDS must be a number of seconds, 0.001 or more")
        for name, prefix in (
            ("CPS_KEY_PREFIX", self.cps_key_prefix),
            ("IDEMPOTENCY_KEY_PREFIX", self.idempotency_key_prefix),
        ):
            if not _KEY_PREFIX.fullmatch(prefix):
                raise ConfigurationError(
                    f"{name} must be 1 to 100 letters, digits or ':_.-', got {prefix!r}"
                )
        if not self.service_name.strip():
            raise ConfigurationError("SERVICE_NAME must not be blank")
        if self.log_level not in logging.getLevelNamesMapping():
            raise ConfigurationError("LOG_LEVEL must be a logging level such as INFO or DEBUG")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; an empty variable counts as unset (templates often pass "")."""
        source = os.environ if env is None else env
        values = {key: value.strip() for key, value in source.items() if value.strip()}
        return cls(
            redis_url=_redis_url(values),
            node_worker_url=values.get("NODE_WORKER_URL", DEFAULT_NODE_WORKER_URL).rstrip("/"),
            max_cps=_integer(values, "MAX_CPS", DEFAULT_MAX_CPS),
            strategy=cast(Strategy, _choice(values, "CPS_STRATEGY", STRATEGIES, DEFAULT_STRATEGY)),
            fail_mode=cast(
                FailMode, _choice(values, "CPS_FAIL_MODE", FAIL_MODES, DEFAULT_FAIL_MODE)
            ),
            fallback_containers=_integer(
                values, "CPS_FALLBACK_CONTAINERS", DEFAULT_FALLBACK_CONTAINERS
            ),
            dial_timeout=_number(values, "DIAL_TIMEOUT_SECONDS", DEFAULT_DIAL_TIMEOUT_SECONDS),
            rate_limit_max_wait=_number(
                values, "RATE_LIMIT_MAX_WAIT_SECONDS", DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS
            ),
            idempotency_ttl=_integer(
                values, "IDEMPOTENCY_TTL_SECONDS", DEFAULT_IDEMPOTENCY_TTL_SECONDS
            ),
            call_max_seconds=_number(values, "CALL_MAX_SECONDS", DEFAULT_CALL_MAX_SECONDS),
            worker_frees_leases=_boolean(
                values, "WORKER_FREES_LEASES", DEFAULT_WORKER_FREES_LEASES
            ),
            cps_key_prefix=values.get("CPS_KEY_PREFIX", DEFAULT_CPS_KEY_PREFIX),
            idempotency_key_prefix=values.get(
                "IDEMPOTENCY_KEY_PREFIX", DEFAULT_IDEMPOTENCY_KEY_PREFIX
            ),
            service_name=values.get("SERVICE_NAME", DEFAULT_SERVICE_NAME),
            log_level=values.get("LOG_LEVEL", DEFAULT_LOG_LEVEL).upper(),
        )


def _redis_url(values: Mapping[str, str]) -> str:
    if "REDIS_URL" in values:
        # REDIS_URL wins over host and port, which are then not read (nor checked).
        return values["REDIS_URL"]
    host = values.get("REDIS_HOST", DEFAULT_REDIS_HOST)
    if any(char in host for char in "/@?# ") or not host:
        raise ConfigurationError("REDIS_HOST must be a host name or address")
    port = _integer(values, "REDIS_PORT", DEFAULT_REDIS_PORT)
    if not 0 < port <= MAX_PORT:
        raise ConfigurationError(f"REDIS_PORT must be between 1 and {MAX_PORT}, got {port}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"redis://{host}:{port}/0"


def _split(url: str, name: str) -> SplitResult:
    # The value itself is never quoted in the message: it may carry a password.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ConfigurationError(f"{name} is not a valid URL") from None
    return parts


def _check_redis_url(url: str, name: str) -> None:
    parts = _split(url, name)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"{name} must start with one of {', '.join(sorted(s + '://' for s in REDIS_SCHEMES))}"
        )
    if parts.scheme in {"redis", "rediss"} and not parts.hostname:
        raise ConfigurationError(f"{name} must name a host")


def _check_worker_url(url: str) -> None:
    parts = _split(url, "NODE_WORKER_URL")
    if parts.scheme not in WORKER_SCHEMES or not parts.hostname:
        raise ConfigurationError(
            "NODE_WORKER_URL must be an http:// or https:// URL with a host, "
            f"got scheme {parts.scheme!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError("NODE_WORKER_URL must not have a query or fragment")


def _integer(values: Mapping[str, str], name: str, default: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _boolean(values: Mapping[str, str], name: str, default: bool) -> bool:
    raw = values.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _number(values: Mapping[str, str], name: str, default: float) -> float:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        number = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"{name} must be a finite number, got {raw!r}")
    return number


def _choice(values: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = values.get(name, default).lower()
    if raw not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
