"""What became of one task: its status, as the result counts it, and the errors it can carry."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

TOO_LATE_ERROR: Final = "no time left to dial before the invocation's deadline"
NOT_GRANTED_ERROR: Final = "no CPS permit within the wait budget"
FAIL_CLOSED_ERROR: Final = "Redis unavailable and CPS_FAIL_MODE=closed: not dialed"


class TaskStatus(StrEnum):
    """The counts of the result, named as its keys."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    RATE_LIMITED = "rateLimited"
    DUPLICATE = "duplicates"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What became of one task; ``retry`` puts it in ``batchItemFailures``."""

    status: TaskStatus
    error: str | None = None
    retry: bool = False

    def __post_init__(self) -> None:
        if self.status is TaskStatus.FAILED and not self.error:
            raise ValueError("a failed task needs an error")
