"""Taking the samples: contenders that take turns round by round within a comparison, and the
session that holds the comparisons, the Redis they run against and what they opened."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cps_limiter import Limiter, Strategy
from loadtest._probe import timed_rate


@dataclass
class Contender:
    name: str
    measure: Callable[[], float]
    """Takes one sample (a rate, a duration or a size, in the comparison's unit)."""
    note: str = ""


@dataclass
class Comparison:
    key: str
    title: str
    unit: str
    baseline: str
    contenders: list[Contender]
    rounds: int
    higher_is_better: bool = True
    samples: dict[str, list[float]] = field(default_factory=dict)

    def run(self) -> None:
        self.samples = {c.name: [] for c in self.contenders}
        for index in range(self.rounds):
            shift = index % len(self.contenders)
            for contender in self.contenders[shift:] + self.contenders[:shift]:
                self.samples[contender.name].append(contender.measure())

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str, reference: str | None = None) -> float:
        """Median over rounds of ``name``'s sample divided by the reference's in that round."""
        ref = self.samples[reference or self.baseline]
        return statistics.median(a / b for a, b in zip(self.samples[name], ref, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "baseline": self.baseline,
            "higher_is_better": self.higher_is_better,
            "contenders": [
                {
                    "name": c.name,
                    "note": c.note,
                    "median": self.median(c.name),
                    "min": min(self.samples[c.name]),
                    "max": max(self.samples[c.name]),
                    "ratio": self.ratio(c.name),
                    "samples": self.samples[c.name],
                }
                for c in self.contenders
            ],
        }


class Session:
    """One run of the benchmark: its settings, its Redis, the comparisons run so far, and
    everything they opened (closed with ``stack``)."""

    def __init__(
        self,
        url: str,
        rounds: int,
        slice_seconds: float,
        process_rounds: int,
        stack: contextlib.ExitStack,
    ) -> None:
        self.url = url
        self.rounds = rounds
        self.process_rounds = process_rounds
        self.slice = slice_seconds
        self.stack = stack
        self.run_id = uuid.uuid4().hex[:8]
        self.comparisons: dict[str, Comparison] = {}
        self.notes: dict[str, str] = {}

    def prefix(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

    def limiter(self, name: str, strategy: Strategy, **options: Any) -> Limiter:
        limiter = Limiter.from_url(self.url, strategy, prefix=self.prefix(name), **options)
        self.stack.callback(limiter.close)
        return limiter

    def timed(self, operation: Callable[[], object], per_call: int = 1) -> Callable[[], float]:
        """A sample: how many times per second ``operation`` runs in one slice, times the
        units of work (``per_call``) each run does."""
        return lambda: timed_rate(operation, self.slice) * per_call

    def add(self, comparison: Comparison) -> None:
        started = time.perf_counter()
        print(f"  {comparison.title} ...", end="", flush=True)
        comparison.run()
        print(f" {time.perf_counter() - started:.1f} s", flush=True)
        self.comparisons[comparison.key] = comparison
