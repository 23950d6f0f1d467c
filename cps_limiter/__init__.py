"""cps_limiter: exact, fast, fail-safe distributed rate limiting on Redis."""

from ._adaptive import AdaptivePolicy, AimdState, HealthReport
from ._async_limiter import AsyncLimiter
from ._decision import Decision, RateLimitExceeded
from ._errors import BackendUnavailable, ConfigurationError, LimiterError
from ._limiter import Limiter
from ._names import STRATEGY_NAMES, strategy_from_name
from ._rules import MAX_LEASE_ID_LENGTH, Concurrency, Rule, RulesDecision
from ._strategies import FixedWindow, PacedWindow, SlidingWindow, Strategy, TokenBucket
from ._version import __version__

__all__ = [
    "MAX_LEASE_ID_LENGTH",
    "STRATEGY_NAMES",
    "AdaptivePolicy",
    "AimdState",
    "AsyncLimiter",
    "BackendUnavailable",
    "Concurrency",
    "ConfigurationError",
    "Decision",
    "FixedWindow",
    "HealthReport",
    "Limiter",
    "LimiterError",
    "PacedWindow",
    "RateLimitExceeded",
    "Rule",
    "RulesDecision",
    "SlidingWindow",
    "Strategy",
    "TokenBucket",
    "__version__",
    "strategy_from_name",
]
