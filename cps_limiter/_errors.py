"""The exception tree. Third-party errors are translated into these at one boundary."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._decision import Decision


class LimiterError(Exception):
    """Base of every error that cps_limiter raises."""


class ConfigurationError(LimiterError, ValueError):
    """An argument or setting is invalid; the message names it."""


class BackendUnavailable(LimiterError):
    """Redis could not be reached or did not answer in time (raised when fail_mode="closed")."""


class RateLimitExceeded(LimiterError):
    """The permits were denied; for callers that prefer an exception to a Decision."""

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        self.retry_after = decision.retry_after
        super().__init__(
            message
            or f"rate limit exceeded: {decision.limit} per window, retry after "
            f"{decision.retry_after:.3f}s"
        )
