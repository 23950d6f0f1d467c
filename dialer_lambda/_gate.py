"""The last step before a dial leaves the container: its turn, at least one spacing after the
previous dial's."""

from __future__ import annotations

import math
import threading
import time

CATCH_UP = 0.5
"""The gate lets dials leave this much of a spacing apart: closer than granted, so that after a
late wake the dials behind catch up with their moments. Each sleep overshoots its turn a
little (a fraction of a millisecond with threads, more under gevent); at 0.95 of a spacing the
catch-up was smaller than that overshoot, and a container holding consecutive slots fell
further behind with each dial, onto the slots Redis gave other containers."""


class SendGate:
    """Keeps this container's dials one spacing apart as they leave. Their moments already are,
    on the Redis clock; but a container that stalls (a busy host, a long pause) wakes with every
    late dial due at once, and without the gate they would reach the carrier as one burst. With
    it they leave spaced as granted, each a little later. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = -math.inf

    def wait_turn(self, spacing: float) -> None:
        """Return at least ``spacing`` seconds (less the catch-up) after the previous dial
        left the gate."""
        spacing *= CATCH_UP
        # The spacing counts from when the previous dial really left, not from a turn booked
        # for it: a thread that wakes late (the interpreter busy elsewhere) would otherwise
        # leave right beside the one booked after it, two dials in one spacing.
        while True:
            with self._lock:
                now = time.monotonic()
                turn = self._left + spacing
                if turn <= now:
                    self._left = now
                    return
            time.sleep(turn - now)
