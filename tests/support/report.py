"""Figures a test measured, shown at the end of the run (tests/conftest.py prints them) whether
or not the test that measured them passed."""

from __future__ import annotations

import pytest

_LINES = pytest.StashKey[list[str]]()


def report_line(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(_LINES, []).append(line)


def reported_lines(config: pytest.Config) -> list[str]:
    lines: list[str] = config.stash.get(_LINES, [])
    return list(lines)
