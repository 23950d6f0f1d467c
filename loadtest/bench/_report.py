"""The benchmark's report: the machine it ran on, and its results as markdown."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.reports import Verdict, verdict_table
from loadtest.servers import REDIS_SERVER

from ._measure import Comparison, Session
from ._scale import CPU_SECONDS, SATURATION_SECONDS

PACKAGES = ("cps-limiter", "redis", "hiredis", "limits", "opentelemetry-sdk")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": server.stdout.split()[2].removeprefix("v=") if server.stdout else "?",
        "packages": {name: _version(name) for name in PACKAGES},
        "load_average_before": os.getloadavg(),
    }


def _figure(value: float, unit: str) -> str:
    if unit in ("ms", "MB"):
        return f"{value:,.1f}"
    if unit == "µs":
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def _comparison_table(comparison: Comparison, note: str) -> list[str]:
    unit = comparison.unit
    better = "higher" if comparison.higher_is_better else "lower"
    lines = [
        f"**{comparison.title}** ({unit}, {better} is better; ratio against {comparison.baseline})",
        "",
        f"| contender | median {unit} | min - max | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for contender in comparison.contenders:
        name = contender.name + (f" ({contender.note})" if contender.note else "")
        samples = comparison.samples[contender.name]
        lines.append(
            f"| {name} | {_figure(comparison.median(contender.name), unit)} | "
            f"{_figure(min(samples), unit)} - {_figure(max(samples), unit)} | "
            f"{comparison.ratio(contender.name):.2f}x |"
        )
    if note:
        lines += ["", note]
    return [*lines, ""]


def _scale_rounds(session: Session) -> str:
    parts = [
        f"{label}: {session.comparisons[key].rounds} rounds of {seconds:g} s per contender"
        for key, label, seconds in (
            ("cpu", "Redis CPU", CPU_SECONDS),
            ("saturation", "saturation", SATURATION_SECONDS),
        )
        if key in session.comparisons
    ]
    return f" {'; '.join(parts)}." if parts else ""


def table(session: Session, verdicts: Sequence[Verdict], info: dict[str, Any]) -> str:
    """The results as markdown: one table per comparison, then the targets."""
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"redis-server {info['redis_server']}, redis-py {info['packages']['redis']}, "
        f"limits {info['packages']['limits']}; {info['date']}; load average before "
        f"{info['load_average_before'][0]:.2f}, after {info['load_average_after'][0]:.2f}. "
        f"Throughput: median of {session.rounds} rounds of {session.slice:g} s per contender, "
        "the order rotating each round; ratios are medians of per-round ratios. Dialer and cold "
        f"start: {session.process_rounds * 2} and {session.process_rounds} rounds."
        + _scale_rounds(session),
        "",
    ]
    for comparison in session.comparisons.values():
        lines += _comparison_table(comparison, session.notes.get(comparison.key, ""))
    lines += ["**Targets**", "", *verdict_table(verdicts, "comparison")]
    return "\n".join(lines) + "\n"
