"""What the benchmark and the load test report: figures held against their targets, and the
folder their reports go to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
UNITS = ("", "x", "%", "MB")
"""How a figure reads: a count, a ratio, a fraction shown as a percentage, megabytes."""


@dataclass(frozen=True)
class Verdict:
    """A measured figure held against its target: at least or at most ``threshold``."""

    subject: str
    """What was measured: a load-test scenario, a benchmark comparison."""
    text: str
    measured: float
    threshold: float
    at_least: bool = False
    unit: str = ""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {self.unit!r}")

    @property
    def passed(self) -> bool:
        return self.measured >= self.threshold if self.at_least else self.measured <= self.threshold

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "MISS"

    def shown(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "%":
            return f"{value:.1%}"
        if self.unit:
            return f"{value:.1f} {self.unit}"
        return f"{value:g}"

    @property
    def target(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.shown(self.threshold)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "check": self.text,
            "measured": self.measured,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "unit": self.unit,
            "pass": self.passed,
        }


def verdict_table(verdicts: Sequence[Verdict], subject: str) -> list[str]:
    """The verdicts as the lines of a markdown table; ``subject`` heads its first column."""
    lines = [
        f"| {subject} | check | measured | target | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    lines += [
        f"| {v.subject} | {v.text} | {v.shown(v.measured)} | {v.target} | {v.result} |"
        for v in verdicts
    ]
    return lines


def write_report(output: Path, name: str, markdown: str, data: dict[str, Any]) -> None:
    """``name.md`` and ``name.json`` in ``output``, which is made if missing."""
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.md").write_text(markdown)
    (output / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
