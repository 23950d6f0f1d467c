"""`RedisThread`: one thread of the stub that writes to Redis as the worker would, so that a
dial's answer never waits for a round trip; `close` stops it and, when it owns it, the client."""

from __future__ import annotations

import threading
from typing import Any


class RedisThread:
    """The state both of the stub's Redis threads share; a subclass defines ``_run``, which
    waits on ``_wake`` and returns once ``_stopping`` is set."""

    def __init__(self, client: Any, name: str, *, owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client
        self._wake = threading.Condition()
        self._stopping = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        if self._owns_client:
            self._client.close()
