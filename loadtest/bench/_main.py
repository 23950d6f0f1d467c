"""Today's main as a contender: our limiters running main's scripts, from git.

The scripts' KEYS and ARGV are the same on both sides, so a limiter of this checkout runs main's
composition of a strategy's script (adaptive prelude, grant block, script) unchanged: only the
Lua differs, and the Redis CPU rows compare the two in the same run, on the same server.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from cps_limiter import Limiter

MAIN = "712fe03"
"""main's commit when issue 19 started."""
PRELUDE = "adaptive.lua"
GRANT_BLOCKS = {
    "fixed_window.lua": "fixed_window_grant.lua",
    "sliding_window.lua": "sliding_window_grant.lua",
    "token_bucket.lua": "token_bucket_grant.lua",
}
"""main's composition, as its ``cps_limiter/_scripts.py`` made it."""
CHECKOUT = Path(__file__).resolve().parents[2]


def main_name(name: str) -> str:
    """The label of main's row beside ``name``'s."""
    return f"{name}, main {MAIN}"


@functools.cache
def _main_file(name: str) -> str:
    return subprocess.run(
        ["git", "show", f"{MAIN}:cps_limiter/lua/{name}"],
        cwd=CHECKOUT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def main_source(script: str) -> str:
    """What main ran for ``script``: the prelude, its grant block if any, then the script."""
    block = GRANT_BLOCKS.get(script)
    grant = "" if block is None else _main_file(block)
    return _main_file(PRELUDE) + grant + _main_file(script)


def on_main(limiter: Limiter) -> Limiter:
    """``limiter``, running main's script for its strategy instead of this checkout's."""
    source = main_source(limiter.strategy.script)
    # The bench reaches into the limiter: no public option swaps a limiter's script.
    limiter._source = source
    limiter._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    return limiter
