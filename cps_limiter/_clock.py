"""The host's wall clock as Redis's TIME reads it.

A request carries a deadline in unix milliseconds, which the script compares with Redis's
clock, so that a stalled server that resumes refuses work nobody waits for any more. A host
whose clock is behind Redis's by more than a request's lifetime would see every request
refused as late; the limiter measures the gap against ``TIME`` then, corrects its deadlines by
it and says so, rather than count the refusals as an outage and fail open.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

logger = logging.getLogger("cps_limiter")

TOLERANCE_MS: Final = 250
"""A measured gap this close to the one already applied explains no late request: Redis ran
it late."""

Reading = tuple[int, Any, int]
"""The host's clock (ns) before ``TIME``, its reply, and the host's clock after."""


def read_time(client: Any) -> Reading:
    before = time.time_ns()
    reply = client.time()
    return before, reply, time.time_ns()


async def aread_time(client: Any) -> Reading:
    before = time.time_ns()
    reply = await client.time()
    return before, reply, time.time_ns()


class HostClock:
    """The milliseconds to add to the host's clock to read Redis's (0 until measured)."""

    __slots__ = ("offset_ms",)

    def __init__(self) -> None:
        self.offset_ms = 0

    def learned(self, reading: Reading) -> bool:
        """Take the gap ``reading`` shows; True when it differs from the one applied so far
        (the late request is worth sending again), False when the clocks agree as before."""
        before, (seconds, micros), after = reading
        host_ms = (before + after) // 2_000_000
        offset = int(seconds) * 1000 + int(micros) // 1000 - host_ms
        if abs(offset - self.offset_ms) < TOLERANCE_MS:
            return False
        self.offset_ms = offset
        logger.warning(
            "The host clock is %.3f s %s Redis's TIME: requests' deadlines are corrected by "
            "it; synchronise the host's clock (NTP)",
            abs(offset) / 1000,
            "behind" if offset > 0 else "ahead of",
            extra={"cps_limiter_clock_skew": offset / 1000},
        )
        return True
