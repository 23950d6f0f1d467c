"""The limiters' state in Redis, sampled while the load test runs: no counter or log may ever
hold more than the limit.

The window counters (``{prefix}:<unix_ts>``, the seed's ``cps:<ts>``) are read exactly, not by
chance: a counter only grows while its second has not ended (a permit's moment is never in the
past) and lives on for a window after it, so a sample taken in second s reads second s - 1's
final value. The counters ahead are read too, for the paced window's reservations.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from loadtest.reports import Verdict

MONITOR_INTERVAL = 0.05
COUNTERS_READ = range(-1, 3)
"""The window counters read at each sample, in seconds from Redis's current one."""


@dataclass
class RedisMonitor:
    """Samples the limiters' state in Redis while the test runs."""

    url: str
    run_id: str
    counted: Sequence[str] = ()
    """The scenarios whose strategy keeps window counters."""
    counter_max: dict[str, int] = field(default_factory=dict)
    sliding_max: int = 0
    samples: int = 0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            while not self._stop.wait(MONITOR_INTERVAL):
                try:
                    self._sample(client)
                except redis.RedisError:
                    self.errors += 1
        finally:
            client.close()

    def _sample(self, client: redis.Redis) -> None:
        reply: Any = client.time()
        seconds, micros = reply
        now_us = seconds * 1_000_000 + micros
        pipe = client.pipeline(transaction=False)
        fixed_keys = [
            (scenario, f"lt-{self.run_id}-{scenario}:{second}")
            for scenario in self.counted
            for second in (seconds + ahead for ahead in COUNTERS_READ)
        ]
        for _, key in fixed_keys:
            pipe.get(key)
        # The sliding window's log scores each grant with its time in microseconds; entries
        # ahead of now are reservations, not yet calls.
        pipe.zcount(f"lt-{self.run_id}-sliding:log", f"({now_us - 1_000_000}", now_us)
        *counters, sliding = pipe.execute()
        for (scenario, _), value in zip(fixed_keys, counters, strict=True):
            self.counter_max[scenario] = max(self.counter_max.get(scenario, 0), int(value or 0))
        self.sliding_max = max(self.sliding_max, int(sliding))
        self.samples += 1

    def verdicts(self, scenarios: Sequence[str], limit: int) -> list[Verdict]:
        """The most the Redis state of the scenarios that ran ever held, against the limit."""
        found = [
            Verdict(
                scenario,
                "Redis: highest window counter (cps:<ts>)",
                self.counter_max.get(scenario, 0),
                limit,
            )
            for scenario in self.counted
            if scenario in scenarios
        ]
        if "sliding" in scenarios:
            found.append(
                Verdict(
                    "sliding",
                    "Redis: most grants in the log's last second",
                    self.sliding_max,
                    limit,
                )
            )
        if self.samples == 0:
            found.append(Verdict("redis", "monitor samples taken", 0, 1, at_least=True))
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "errors": self.errors,
            "counter_max": self.counter_max,
            "sliding_max": self.sliding_max,
        }
