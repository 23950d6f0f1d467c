"""One invocation's clock and the parts of the dialer its steps use.

The steps take these, never the dialer itself or a batch object, so that no module of the
package imports another in a circle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._claims import new_owner

if TYPE_CHECKING:
    from cps_limiter import Limiter

    from ._claims import ClaimStore
    from ._config import Settings
    from ._gate import SendGate
    from ._metrics import MetricsRecorder
    from ._worker import WorkerClient

# Time kept back from the Lambda's remaining time when waiting for permits: a dial granted at
# the end of the wait still gets its full timeout, and the result still gets out.
SAFETY_MARGIN_SECONDS: Final = 1.0
# Time kept back from the Lambda's deadline when dialing: what a task that was not sent holds
# is given back, and the result returned, before Lambda ends the invocation.
DEADLINE_MARGIN_SECONDS: Final = 0.5


class Parts(Protocol):
    """What the steps of a batch use of the dialer (`Dialer` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def limiter(self) -> Limiter: ...
    @property
    def claims(self) -> ClaimStore: ...
    @property
    def worker(self) -> WorkerClient: ...
    @property
    def executor(self) -> ThreadPoolExecutor: ...
    @property
    def metrics(self) -> MetricsRecorder: ...
    @property
    def gate(self) -> SendGate: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...


def time_left(context: Any) -> float | None:
    """Seconds until the invocation's deadline, when a Lambda context says."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return float(remaining()) / 1000.0 if callable(remaining) else None


@dataclass(frozen=True, slots=True)
class Invocation:
    """The batch's ids and deadlines, on the monotonic clock, fixed at its start."""

    request_id: str
    owner: str
    """Whose the batch's claims are: unique to this batch."""
    budget: float
    """Seconds the batch may wait for permits."""
    deadline: float
    """When the wait for permits ends."""
    dials_end: float
    """No dial may still run after this: each one's timeout is cut to it."""
    lifetime: float
    """Seconds from the start until the invocation surely ended: a pending claim's life."""

    @classmethod
    def start(cls, settings: Settings, context: Any) -> Invocation:
        started = time.monotonic()
        request_id = str(getattr(context, "aws_request_id", "") or "local")
        left = time_left(context)
        budget = settings.rate_limit_max_wait
        if left is not None:
            budget = min(budget, left - settings.dial_timeout - SAFETY_MARGIN_SECONDS)
        budget = max(0.0, budget)
        # Outside Lambda nothing ends the invocation: its claims live while its dials may.
        lifetime = left if left is not None else budget + settings.dial_timeout
        return cls(
            request_id=request_id,
            owner=new_owner(request_id),
            budget=budget,
            # Measured from the start of the batch: validation and claims spend the same budget.
            deadline=started + budget,
            dials_end=math.inf if left is None else started + left - DEADLINE_MARGIN_SECONDS,
            lifetime=lifetime,
        )
