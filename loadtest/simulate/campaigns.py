"""Campaigns with calls that last: the worker's calls end ``call_seconds`` after they were
answered and free their lease as the Node worker does (one ``ZREM``), and the chart of calls in
progress per campaign against its ``maxConcurrentCalls``."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loadtest.worker_stub import Call, CallEnds, Outcome, StubHandle

from .config import SimulationConfig

POLL_SECONDS: Final = 0.1
CHART_SIZE: Final = (12, 5)
CHART_DPI: Final = 100


@dataclass
class CallEndWatch:
    """Reads the worker's new answered calls every `POLL_SECONDS` and ends each one
    ``call_seconds`` after its arrival, releasing its lease: the worker's call-end hook for a
    stub in another process, which cannot reach an in-process memory:// Redis itself."""

    stub: StubHandle
    ends: CallEnds
    call_seconds: float
    started: float
    stop: threading.Event = field(default_factory=threading.Event)
    _seen: set[str] = field(default_factory=set)

    def run(self) -> None:
        since = self.started
        while True:
            for call in self.stub.calls_since(since):
                call_id = call.call_id
                if call.outcome is not Outcome.OK or call_id is None or call_id in self._seen:
                    continue
                self._seen.add(call_id)
                since = max(since, call.at)
                if call.body is not None:
                    left = call.at + self.call_seconds - time.time()
                    self.ends.answered(call.body, ends_in=max(left, 0.0))
            if self.stop.wait(POLL_SECONDS):
                return


def in_progress(
    calls: Sequence[Call], call_seconds: float, origin: float
) -> dict[str, list[tuple[float, int]]]:
    """Per campaign, the steps of its calls in progress at the worker: (seconds since
    `origin`, calls in progress from then on)."""
    events: dict[str, list[tuple[float, int]]] = {}
    for call in calls:
        campaign = call.body.get("campaignId") if call.body is not None else None
        if call.outcome is not Outcome.OK or not isinstance(campaign, str):
            continue
        start = call.at - origin
        events.setdefault(campaign, []).extend([(start, 1), (start + call_seconds, -1)])
    series: dict[str, list[tuple[float, int]]] = {}
    for campaign, changes in sorted(events.items()):
        level, steps = 0, [(0.0, 0)]
        for at, change in sorted(changes):
            level += change
            steps.append((at, level))
        series[campaign] = steps
    return series


def peaks(series: Mapping[str, Sequence[tuple[float, int]]]) -> dict[str, int]:
    return {campaign: max(level for _, level in steps) for campaign, steps in series.items()}


def write_campaign_chart(
    path: Path, series: Mapping[str, Sequence[tuple[float, int]]], limit: int, title: str
) -> Path:
    """A PNG: each campaign's calls in progress against its maxConcurrentCalls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=CHART_SIZE, layout="constrained")
    FigureCanvasAgg(figure)
    axis: Any = figure.subplots()
    for campaign, steps in series.items():
        axis.step(
            [at for at, _ in steps],
            [level for _, level in steps],
            where="post",
            linewidth=1,
            label=f"{campaign}: peak {max(level for _, level in steps)}",
        )
    axis.axhline(limit, color="red", label=f"maxConcurrentCalls {limit}")
    axis.set_ylim(0, limit * 1.25)
    axis.set_xlabel("seconds since the run's start")
    axis.set_ylabel("calls in progress")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=CHART_DPI)
    return path


def campaign_figures(
    config: SimulationConfig, calls: Sequence[Call] | None, started: float
) -> tuple[dict[str, int], Path | None]:
    """With lasting calls: each campaign's peak of calls in progress, and their chart."""
    if config.call_seconds is None or not calls:
        return {}, None
    series = in_progress(calls, config.call_seconds, started)
    title = (
        f"calls in progress per campaign: {config.campaigns} campaigns, calls of "
        f"{config.call_seconds:g} s, MAX_CPS {config.max_cps}"
    )
    path = config.out / f"campaigns-{config.strategy}.png"
    return peaks(series), write_campaign_chart(path, series, config.max_concurrent_calls, title)
