"""What a script costs on this server, step by step: the floor under the commandstats rows.

Each contender is one script run with ``EVALSHA`` in pipelines (so the client's speed does not
matter), and the figure is commandstats µs per ``EVALSHA``: the script's time on the server,
with the commands it calls. The steps go from a script that does nothing, through the server
clock (``TIME``), to the least a fixed window on the server clock can do (``TIME``, name the
window's key, ``INCRBY``), against ``limits``' FixedWindow script and our fixed window's
common path. Where the server clock alone costs more than the target allows over ``limits``,
no script that reads it can meet that target on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from cps_limiter._scripts import SOURCES, lua_source, strategy_source

from ._main import main_name, main_source
from ._measure import Comparison, Contender, Session
from ._server import measure

PIPELINE = 100
SECONDS = 0.05
LIMITS_FIXED = (
    "local current = redis.call('incrby', KEYS[1], ARGV[2])\n"
    "if current == tonumber(ARGV[2]) then redis.call('expire', KEYS[1], ARGV[1]) end\n"
    "return current"
)
"""`limits`' FixedWindow script, as its Redis storage sends it (its ARGV: expiry, amount)."""
SERVER_CLOCK_WINDOW = (
    'local clock = redis.call("TIME")\n'
    "local second = tonumber(clock[1])\n"
    'return redis.call("INCRBY", KEYS[1] .. ":" .. (second - second % tonumber(ARGV[2])), 1)'
)
BASELINE = "limits FixedWindow's script"
OURS_FIXED = "cps_limiter FixedWindow's script, a single permit"


def _ours() -> tuple[str, list[str]]:
    """Our fixed window's script and the ARGV of a single-permit acquire without a policy."""
    deadline = str(time.time_ns() // 1_000_000 + 3_600_000)
    return strategy_source("fixed_window.lua"), [
        "1000000000",
        "1",
        "1",
        "0",
        "0.0",
        "acquire",
        deadline,
    ]


def anatomy(session: Session) -> None:
    client = redis.Redis.from_url(session.url)
    session.stack.callback(client.close)
    ours, our_arguments = _ours()
    steps = {
        "a script that returns 1, limits' 2 arguments": ("return 1", ["1", "1"]),
        "a script that returns 1, our 7 arguments": ("return 1", our_arguments),
        "TIME alone (the server clock)": ('redis.call("TIME") return 1', ["1", "1"]),
        "TIME, the window's key, INCRBY (a fixed window on the server clock, nothing more)": (
            SERVER_CLOCK_WINDOW,
            ["1", "1"],
        ),
        "the fixed window's common path, its definitions alone, returning 1": (
            "".join(map(lua_source, SOURCES["fixed_window.lua"][:3])) + "return 1",
            our_arguments,
        ),
        BASELINE: (LIMITS_FIXED, ["1", "1"]),
        OURS_FIXED: (ours, our_arguments),
        main_name(OURS_FIXED): (main_source("fixed_window.lua"), our_arguments),
    }
    contenders = []
    for index, (name, (source, arguments)) in enumerate(steps.items()):
        key = session.prefix(f"anatomy{index}")
        contenders.append(Contender(name, _sampler(client, source, key, arguments)))
    session.add(
        Comparison(
            "anatomy",
            "What a script costs on this server, step by step: INFO commandstats µs per "
            f"EVALSHA, in pipelines of {PIPELINE}",
            "µs",
            BASELINE,
            contenders,
            session.rounds,
            higher_is_better=False,
        )
    )


def _sampler(
    client: redis.Redis, source: str, key: str, arguments: list[str]
) -> Callable[[], float]:
    sha = client.script_load(source)

    def run() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(PIPELINE):
            pipe.evalsha(sha, 1, key, *arguments)
        pipe.execute()

    run()
    return lambda: measure(client, run, SECONDS, frozenset({"evalsha"})).commands["evalsha"][1]
