"""``python -m loadtest.worker_stub``: serve the stub until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields
from types import FrameType
from typing import Final

from .behaviour import SETTINGS, Behaviour
from .calls import CallEnds, client_from_url
from .carrier import DEFAULT_CARRIER_WINDOW, Carrier, CarrierLimit, Refusals, parse_change
from .server import DEFAULT_ANSWER_RATE, DEFAULT_CPU_PERCENT, DEFAULT_HOST, WorkerStub

DEFAULT_PORT: Final = 3000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.worker_stub",
        description="A stand-in for the Node.js dial worker: POST /dial answers as the seed "
        "shows; the rates below make a fraction of requests misbehave.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    for field in fields(Behaviour):
        setting = SETTINGS[field.name]
        parser.add_argument(
            setting.flag(field.name),
            dest=field.name,
            type=setting.kind.parse,
            default=field.default,
            help=setting.help,
        )
    parser.add_argument("--cpu-percent", type=float, default=DEFAULT_CPU_PERCENT)
    parser.add_argument("--answer-rate", type=float, default=DEFAULT_ANSWER_RATE)
    parser.add_argument(
        "--call-seconds",
        type=float,
        default=None,
        help="answered calls last this long, then release their campaign lease in Redis "
        "(ZREM, as docs/dialer.md tells the worker); needs --redis-url",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"), help="(default: $REDIS_URL)"
    )
    parser.add_argument(
        "--lease-prefix",
        default=os.environ.get("CPS_KEY_PREFIX", "cps"),
        help="the dialer's key prefix, for leases and refusals (default: $CPS_KEY_PREFIX or cps)",
    )
    parser.add_argument(
        "--ignore-idempotency-key",
        action="store_true",
        help="place a call for every dial, as the seed's worker does (by default a dial whose "
        "Idempotency-Key placed a call before places none)",
    )
    parser.add_argument(
        "--carrier-limit",
        type=int,
        default=None,
        help="the carrier behind the worker takes this many calls a second and refuses the "
        "rest (SIP 503 after /dial answered); each refusal is reported with HINCRBY "
        "<prefix>:adaptive refused 1 when --redis-url is given",
    )
    parser.add_argument(
        "--carrier-window",
        type=float,
        default=DEFAULT_CARRIER_WINDOW,
        help="seconds the carrier counts over: 1 (Vonage), 5 (Telnyx; limit x 5 in any 5 s)",
    )
    parser.add_argument(
        "--carrier-limit-after",
        type=parse_change,
        action="append",
        default=[],
        metavar="SECONDS:LIMIT",
        help="from SECONDS after the first call the carrier's limit is LIMIT (repeatable)",
    )
    return parser.parse_args(argv)


def carrier_of(args: argparse.Namespace) -> Carrier | None:
    """The carrier the command line asks for; ValueError names what is wrong."""
    if args.carrier_limit is None:
        if args.carrier_limit_after:
            raise ValueError("--carrier-limit-after needs --carrier-limit")
        return None
    return Carrier(
        CarrierLimit(args.carrier_limit, args.carrier_window, tuple(args.carrier_limit_after))
    )


def behaviour_of(args: argparse.Namespace) -> Behaviour:
    """The behaviour the command line asks for; ValueError names a field it cannot have."""
    return Behaviour(**{name: getattr(args, name) for name in SETTINGS})


SWITCH_INTERVAL_SECONDS = 0.0005
"""The stub stamps each arrival on one of its threads: with CPython's default hand-over of the
interpreter every 5 ms, a stamp can wait that long behind another thread, jitter that belongs
to the stub, not to the calls it measures. A process of its own (``python -m``) only."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # A full collection stalls every thread: the stamps taken meanwhile would all be late.
    # The stub's records hold no cycles, and a run lasts minutes.
    gc.disable()
    try:
        ends = None
        if args.call_seconds is not None:
            if not args.redis_url:
                raise ValueError("--call-seconds needs --redis-url (or $REDIS_URL)")
            ends = CallEnds.from_url(args.redis_url, args.call_seconds, args.lease_prefix)
        carrier = carrier_of(args)
        refusals = None
        if carrier is not None and args.redis_url:
            client = client_from_url(args.redis_url)
            refusals = Refusals(client, args.lease_prefix, owns_client=True)
        stub = WorkerStub(
            args.host,
            args.port,
            behaviour_of(args),
            cpu_percent=args.cpu_percent,
            answer_rate=args.answer_rate,
            call_ends=ends,
            honour_keys=not args.ignore_idempotency_key,
            carrier=carrier,
            refusals=refusals,
        )
    except (ValueError, OSError) as exc:
        print(f"worker stub: {exc}")
        return 2
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    with stub:
        print(f"worker stub listening on {stub.url} (POST /dial; control: POST /_control)")
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0
