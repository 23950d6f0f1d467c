"""The exception tree. Third-party errors are translated into these at one boundary.

`RateLimitExceeded`, the one error that carries a `Decision`, lives beside it in
``_decision.py``, so that this module imports nothing of the package.
"""

from __future__ import annotations


class LimiterError(Exception):
    """Base of every error that cps_limiter raises."""


class ConfigurationError(LimiterError, ValueError):
    """An argument or setting is invalid; the message names it."""


class BackendUnavailable(LimiterError):
    """Redis could not be reached or did not answer in time (raised when fail_mode="closed")."""


class LateRequest(LimiterError):
    """Redis ran a request after the deadline the request carried: either a stalled server ran
    it late, or the host's clock is behind Redis's (internal; the limiter tells the two apart)."""
