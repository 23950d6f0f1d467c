"""The figures the fault runs measured, for the fault table in docs/bench.md.

``RELIABILITY_REPORT=/path.json`` writes them at the end of the session (see the
``fault_report`` fixture in ``tests/reliability/conftest.py``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Measurement:
    """What one fault run showed, for the fault table in docs/bench.md."""

    component: str
    fault: str
    variant: str
    worst_decision_ms: float
    recovery_ms: float | None
    decisions: int
    fail_open: int
    notes: dict[str, Any] = field(default_factory=dict)


class Report:
    def __init__(self) -> None:
        self.rows: list[Measurement] = []
        self._lock = threading.Lock()

    def add(self, row: Measurement) -> None:
        with self._lock:
            self.rows.append(row)

    def write(self, target: Path) -> None:
        with self._lock:
            rows = [asdict(row) for row in self.rows]
        if rows:
            target.write_text(json.dumps(rows, indent=1))
