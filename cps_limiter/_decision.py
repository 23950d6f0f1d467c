"""The outcome of one decision."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import RateLimitExceeded


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

    def raise_for_denied(self) -> Decision:
        """Return the decision when allowed, else raise `RateLimitExceeded` carrying it."""
        if not self.allowed:
            raise RateLimitExceeded(self)
        return self
