"""cps_limiter: exact, fast, fail-safe distributed rate limiting on Redis."""

from ._adaptive import AdaptivePolicy, HealthReport
from ._decision import Decision
from ._errors import BackendUnavailable, ConfigurationError, LimiterError, RateLimitExceeded
from ._limiter import AsyncLimiter, Limiter
from ._strategies import FixedWindow, SlidingWindow, Strategy, TokenBucket
from ._version import __version__

__all__ = [
    "AdaptivePolicy",
    "AsyncLimiter",
    "BackendUnavailable",
    "ConfigurationError",
    "Decision",
    "FixedWindow",
    "HealthReport",
    "Limiter",
    "LimiterError",
    "RateLimitExceeded",
    "SlidingWindow",
    "Strategy",
    "TokenBucket",
    "__version__",
]
