"""The run's progress bar on stderr: tqdm, or nothing."""

from __future__ import annotations

import sys
from typing import Any

from .config import SimulationConfig


class Progress:
    """A tqdm bar on stderr, or nothing."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(config: SimulationConfig) -> Progress:
    if not config.progress:
        return Progress(None)
    from tqdm import tqdm

    return Progress(
        tqdm(
            total=config.tasks,
            desc=f"{config.strategy} @ {config.max_cps}/s",
            unit="task",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    )
