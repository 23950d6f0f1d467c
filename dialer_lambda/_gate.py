"""The last step before a dial leaves the container: its turn, at least one spacing after the
previous dial's."""

from __future__ import annotations

import math
import threading
import time


class SendGate:
    """Keeps this container's dials one spacing apart as they leave. Their moments already are,
    on the Redis clock; but a container that stalls (a busy host, a long pause) wakes with every
    late dial due at once, and without the gate they would reach the carrier as one burst. With
    it they leave spaced as granted, each a little later. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -math.inf

    def wait_turn(self, spacing: float) -> None:
        """Sleep until at least ``spacing`` seconds after the previous dial's turn."""
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._last + spacing)
            self._last = turn
        if turn > now:
            time.sleep(turn - now)
