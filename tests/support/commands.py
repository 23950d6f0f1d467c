"""What Redis counted: the commands a piece of code sent, read from INFO commandstats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval")


def script_calls(client: Any, operation: Callable[[], object]) -> dict[str, int]:
    """The EVAL and EVALSHA calls Redis counted while ``operation`` ran, by command, those it
    did not call left out. INFO itself is not a script call, so it does not count."""
    before = client.info("commandstats")
    operation()
    after = client.info("commandstats")
    calls = {}
    for name in SCRIPT_COMMANDS:
        delta = after.get(name, {"calls": 0})["calls"] - before.get(name, {"calls": 0})["calls"]
        if delta:
            calls[name] = delta
    return calls
