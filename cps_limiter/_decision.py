"""The outcome of one decision, and the error that carries a denied one."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LimiterError


@dataclass(frozen=True, slots=True)
class Decision:
    """What the limiter decided, as of the moment it decided.

    ``retry_after`` is ``math.inf`` when the request can never be granted as asked (more permits
    than the limit, all or nothing).
    """

    allowed: bool
    granted: int
    limit: int
    remaining: int
    retry_after: float
    reset_after: float
    fail_open: bool = False
    waited: float = 0.0
    schedule: tuple[float, ...] = ()
    """For a paced grant of several permits: the moment each may be used, in seconds after
    the decision was returned (the first is 0.0, as acquire has already waited for it). Empty
    when every granted permit may be used at once."""

    def raise_for_denied(self) -> Decision:
        """Return the decision when allowed, else raise `RateLimitExceeded` carrying it."""
        if not self.allowed:
            raise RateLimitExceeded(self)
        return self


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
