"""The operator's command: ``cps-limiter status`` and ``cps-limiter check``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

from ._connect import sync_client
from ._errors import ConfigurationError
from ._limiter import DEFAULT_PREFIX, Limiter
from ._strategies import FixedWindow, SlidingWindow, Strategy, TokenBucket

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_LIMIT = 100
STRATEGY_NAMES = ("fixed", "sliding", "token")


def _strategy(name: str, limit: int) -> Strategy:
    if name == "token":
        return TokenBucket(rate=limit)
    if name == "sliding":
        return SlidingWindow(limit)
    return FixedWindow(limit)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis to talk to (default: $REDIS_URL, else %(default)s)",
    )
    common.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="key prefix (default: %(default)s)"
    )
    common.add_argument("--scope", default=None, help="the scope of the limit, if any")
    common.add_argument(
        "--limit",
        type=int,
        default=int(os.environ.get("MAX_CPS", DEFAULT_LIMIT)),
        help="permits per second (default: $MAX_CPS, else %(default)s)",
    )
    common.add_argument("--strategy", choices=STRATEGY_NAMES, default="fixed")
    common.add_argument("--json", action="store_true", help="print one JSON object")

    parser = argparse.ArgumentParser(prog="cps-limiter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "status",
        parents=[common],
        help="this second's count, the limit, and whether Redis answers",
    )
    commands.add_parser("check", parents=[common], help="take one permit and print the decision")
    return parser


def _ping(url: str) -> tuple[bool, float | None, str | None]:
    client = sync_client(url)
    started = time.perf_counter()
    try:
        client.ping()
    except Exception as exc:  # any failure means "not reachable"; the reason is printed
        return False, None, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return True, (time.perf_counter() - started) * 1000, None


def _status(args: argparse.Namespace, limiter: Limiter) -> dict[str, object]:
    reachable, latency_ms, error = _ping(args.redis_url)
    peeked = limiter.peek(args.scope)
    report: dict[str, object] = {
        "redis_reachable": reachable,
        "redis_latency_ms": None if latency_ms is None else round(latency_ms, 2),
        "strategy": args.strategy,
        "limit": peeked.limit,
        "count": None if peeked.fail_open else peeked.limit - peeked.remaining,
    }
    strategy = limiter.strategy
    if isinstance(strategy, FixedWindow) and reachable:
        # The seed's own view: the counter of this second, as `redis-cli GET` shows it.
        client = limiter.client
        seconds, _ = client.time()
        key = f"{limiter.key_base(args.scope)}:{seconds - seconds % strategy.window}"
        report["key"] = key
        report["count"] = int(client.get(key) or 0)
    if error:
        report["redis_error"] = error
    return report


def _print(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        limiter = Limiter.from_url(
            args.redis_url, _strategy(args.strategy, args.limit), prefix=args.prefix
        )
    except ConfigurationError as exc:
        print(f"cps-limiter: {exc}", file=sys.stderr)
        return 2
    with limiter:
        if args.command == "status":
            report = _status(args, limiter)
            _print(report, args.json)
            return 0 if report["redis_reachable"] else 1
        decision = limiter.acquire(args.scope)
        _print(dataclasses.asdict(decision), args.json)
        return 0 if decision.allowed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
