"""cps_limiter: exact, fast, fail-safe distributed rate limiting on Redis."""

from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError, LimiterError, RateLimitExceeded
from ._limiter import AsyncLimiter, Limiter
from ._strategies import FixedWindow, SlidingWindow, Strategy, TokenBucket
from ._version import __version__

__all__ = [
    "AsyncLimiter",
    "BackendUnavailable",
    "ConfigurationError",
    "Decision",
    "FixedWindow",
    "Limiter",
    "LimiterError",
    "RateLimitExceeded",
    "SlidingWindow",
    "Strategy",
    "TokenBucket",
    "__version__",
]
