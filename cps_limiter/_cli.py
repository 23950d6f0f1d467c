"""The operator's command: look at the limit, change it at run time, watch the pace."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._adaptive import AdaptivePolicy
from ._connect import sync_client
from ._core import DEFAULT_PREFIX
from ._errors import LimiterError
from ._limiter import Limiter
from ._names import STRATEGY_NAMES, strategy_from_name
from ._rules import LEASES_SUFFIX
from ._strategies import FixedWindow, PacedWindow

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_LIMIT = 100
DEFAULT_CAP_TTL = 600.0
WATCH_INTERVAL = 0.25
BAR_WIDTH = 40
MAX_LEASE_SCOPES = 100
"""Scopes whose leases status lists at most: a view for an operator, not an export."""


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
        help="the base limit, permits per second (default: $MAX_CPS, else %(default)s)",
    )
    common.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default=os.environ.get("CPS_STRATEGY", STRATEGY_NAMES[0]),
        help="(default: $CPS_STRATEGY, else %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")

    parser = argparse.ArgumentParser(prog="cps-limiter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "status",
        parents=[common],
        help="base limit, health tier, cap, the carrier's refusals (AIMD), limit in force, "
        "this second's count, leases held per scope (campaign), Redis",
    )
    commands.add_parser("check", parents=[common], help="take one permit and print the decision")
    health = commands.add_parser("health", parents=[common], help="report the host's health")
    health.add_argument("--cpu", type=float, required=True, help="CPU use, percent")
    health.add_argument("--answer-rate", type=float, default=None, help="answered share, 0..1")
    cap = commands.add_parser(
        "set-limit", parents=[common], help="override the base limit at run time, with an expiry"
    )
    cap.add_argument("cap", type=int, help="the limit to use instead of the base")
    cap.add_argument("--ttl", type=float, default=DEFAULT_CAP_TTL, help="seconds (%(default)s)")
    commands.add_parser("clear-limit", parents=[common], help="drop the override")
    watch = commands.add_parser(
        "watch", parents=[common], help="a live view of calls per second against the limit"
    )
    watch.add_argument("--seconds", type=float, default=None, help="stop after this long")
    return parser


def _ping(limiter: Limiter) -> tuple[bool, float | None, str | None]:
    started = time.perf_counter()
    try:
        limiter.client.ping()
    except Exception as exc:  # any failure means "not reachable"; the reason is printed
        return False, None, f"{type(exc).__name__}: {exc}"
    return True, round((time.perf_counter() - started) * 1000, 2), None


def _this_second(limiter: Limiter, scope: str | None) -> tuple[str | None, int | None]:
    """The counter of this second (fixed and paced windows) and its value, as redis-cli GET
    shows it."""
    strategy = limiter.strategy
    if not isinstance(strategy, FixedWindow | PacedWindow):
        return None, None
    seconds, _ = limiter.client.time()
    key = f"{limiter.key_base(scope)}:{seconds - seconds % strategy.window}"
    return key, int(limiter.client.get(key) or 0)


def _status(args: argparse.Namespace, limiter: Limiter) -> dict[str, object]:
    reachable, latency_ms, error = _ping(limiter)
    report: dict[str, object] = {
        "redis_reachable": reachable,
        "redis_latency_ms": latency_ms,
        "strategy": args.strategy,
        "base_limit": args.limit,
    }
    if not reachable:
        report["redis_error"] = error
        return report
    policy = limiter.adaptive or AdaptivePolicy()
    health = limiter.health(args.scope)
    stale = health.age is None or health.age > policy.max_age
    cap, cap_ttl = limiter.cap(args.scope)
    aimd = limiter.aimd(args.scope)
    peeked = limiter.peek(args.scope)
    key, count = _this_second(limiter, args.scope)
    report.update(
        {
            "cpu": health.cpu,
            "answer_rate": health.answer_rate,
            "health_age_s": None if health.age is None else round(health.age, 1),
            "health_tier": (
                "no report" if health.age is None else "stale" if stale else policy.tier(health.cpu)
            ),
            "cap": cap,
            "cap_ttl_s": cap_ttl,
            "refusals_pending": aimd.refused,
            "aimd_limit": None if aimd.limit is None else round(aimd.limit, 1),
            "aimd_decreased_s_ago": (
                None if aimd.since_decrease is None else round(aimd.since_decrease, 1)
            ),
            "limit_in_force": peeked.limit,
            "count": peeked.limit - peeked.remaining if count is None else count,
        }
    )
    if key is not None:
        report["key"] = key
    report["leases"] = _leases(limiter)
    return report


def _leases(limiter: Limiter) -> dict[str, int]:
    """The live leases of each scope that holds a lease set (``campaign:<id>`` for the dialer),
    on the Redis clock."""
    head = f"{limiter.rules_base()}:"
    tail = f":{LEASES_SUFFIX}"
    held: dict[str, int] = {}
    for raw in limiter.client.scan_iter(match=f"{_glob_escaped(head)}*{tail}", count=1000):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        scope = name[len(head) : -len(tail)]
        if len(held) >= MAX_LEASE_SCOPES:
            break
        with contextlib.suppress(LimiterError):
            held[scope] = limiter.leases_held(scope)[0]
    return dict(sorted(held.items()))


def _glob_escaped(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _watch(args: argparse.Namespace, limiter: Limiter) -> int:
    """One line per interval: the calls of this second against the limit in force."""
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            peeked = limiter.peek(args.scope)
            _, count = _this_second(limiter, args.scope)
            used = peeked.limit - peeked.remaining if count is None else count
            filled = min(BAR_WIDTH, round(BAR_WIDTH * used / max(peeked.limit, 1)))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            note = "  (Redis unavailable)" if peeked.fail_open else ""
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp}  {used:>6}/{peeked.limit:<6} calls/s  [{bar}]{note}", flush=True)
            time.sleep(WATCH_INTERVAL)
    except KeyboardInterrupt:
        pass
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


def _run(args: argparse.Namespace, limiter: Limiter) -> int:
    if args.command == "status":
        return _report(_status(args, limiter), args.json, "redis_reachable")
    if args.command == "check":
        return _report(dataclasses.asdict(limiter.acquire(args.scope)), args.json, "allowed")
    if args.command == "watch":
        return _watch(args, limiter)
    if args.command == "health":
        limiter.report_health(args.cpu, args.answer_rate, args.scope)
    elif args.command == "set-limit":
        limiter.set_cap(args.cap, args.ttl, args.scope)
    else:
        limiter.clear_cap(args.scope)
    print("ok")
    return 0


def _report(report: dict[str, Any], as_json: bool, ok: str) -> int:
    _print(report, as_json)
    return 0 if report[ok] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        limiter = Limiter(
            sync_client(args.redis_url),
            strategy_from_name(args.strategy, args.limit),
            prefix=args.prefix,
            adaptive=AdaptivePolicy(),
        )
        with limiter:
            return _run(args, limiter)
    except LimiterError as exc:
        print(f"cps-limiter: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an operator gets one line, not a traceback
        print(f"cps-limiter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
