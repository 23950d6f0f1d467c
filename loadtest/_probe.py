"""Measurements that need a process of their own, run by `loadtest.bench` as children.

- ``tracing``: a tracer provider can be set once per process, so each provider lives in a
  process of its own; it answers ``run SECONDS on|off|floor`` lines on stdin with one JSON line,
  the rate with the limiter's telemetry in place, taken out, or replaced by a bare span (the
  SDK's floor), so that the parent can alternate them in the same process round by round.
- ``dialer``: a dialer against the worker stub; answers ``run SIZE`` with the seconds one
  batch of SIZE tasks took.
- ``import``: the seconds ``import MODULE[,MODULE...]`` takes in a fresh interpreter.
- ``rss``: the peak resident memory of a process that imported the Lambda entry point (which
  builds its dialer from the environment, as in Lambda) and handled a batch with it.

Every child writes its results as JSON lines on its original stdout; anything else the code
under test prints (the handler's JSON logs and EMF lines) goes to /dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

PROVIDERS = ("none", "batch", "sampled")
SAMPLED_RATIO = 0.1
CHECK_EVERY = 32
"""Operations between two looks at the clock in a timed loop."""


def timed_rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second of ``operation`` run back to back for about ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    now = started
    while now < deadline:
        for _ in range(CHECK_EVERY):
            operation()
        done += CHECK_EVERY
        now = time.perf_counter()
    return done / (now - started)


def _quiet_stdout() -> TextIO:
    """The real stdout, for results; sys.stdout itself now goes to /dev/null."""
    channel = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return channel


def _answer(channel: TextIO, payload: dict[str, Any]) -> None:
    channel.write(json.dumps(payload) + "\n")
    channel.flush()


def _untraced(strategy: str, permits: int, decide: Callable[[Any], Any], request: Any) -> Any:
    """What a limiter without any telemetry would do: decide, nothing more."""
    return decide(request)


class _BareSpan:
    """The SDK's floor: one span started and ended per decision, with no attributes and not
    made current. No code that makes a span per decision can cost less."""

    tracer: Any = None
    """Set once the process's tracer provider is."""

    @classmethod
    def observed(
        cls, strategy: str, permits: int, decide: Callable[[Any], Any], request: Any
    ) -> Any:
        span = cls.tracer.start_span("floor")
        try:
            return decide(request)
        finally:
            span.end()


HOOKS: dict[str, Any] = {"off": _untraced, "floor": _BareSpan.observed}
"""The stand-ins for the limiter's telemetry hook (`cps_limiter._telemetry.observed`), by the
state a ``run`` line names; ``on`` is the hook itself."""


def _configure_tracing(provider: str) -> None:
    """Install the OpenTelemetry SDK (``batch``, ``sampled``) or leave the API alone (``none``)."""
    if provider == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class _Discard(SpanExporter):
        """Exports nowhere: the cost measured is the SDK's, not a network's."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = ParentBased(TraceIdRatioBased(SAMPLED_RATIO)) if provider == "sampled" else None
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    trace.set_tracer_provider(tracer_provider)


def tracing(url: str, provider: str, prefix: str) -> None:
    channel = _quiet_stdout()
    _configure_tracing(provider)
    from opentelemetry import trace

    _BareSpan.tracer = trace.get_tracer("floor")
    import cps_limiter._limiter
    from cps_limiter import FixedWindow, Limiter
    from cps_limiter._telemetry import observed

    limiter = Limiter.from_url(url, FixedWindow(limit=10**9), prefix=prefix)
    timed_rate(limiter.acquire, 0.2)  # warm: connection, script cache, tracer
    _answer(channel, {"ready": True})
    for line in sys.stdin:
        command, *args = line.split()
        if command != "run":
            break
        # "off" is a limiter without any telemetry code: the baseline for what it costs.
        hook = HOOKS.get(args[1], observed)
        # The limiter looks its telemetry hook up in its module on each decision.
        setattr(cps_limiter._limiter, "observed", hook)  # noqa: B010
        _answer(channel, {"rate": timed_rate(limiter.acquire, float(args[0]))})
    limiter.close()


def _dialer_env(redis_url: str, worker_url: str, prefix: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "NODE_WORKER_URL": worker_url,
        # High enough that no batch waits for permits: the cost measured is the dials'.
        "MAX_CPS": "100000",
        "CPS_KEY_PREFIX": f"{prefix}:cps",
        "IDEMPOTENCY_KEY_PREFIX": f"{prefix}:claim",
    }


def dialer(redis_url: str, worker_url: str, prefix: str) -> None:
    channel = _quiet_stdout()
    from dialer_lambda import Dialer, Settings

    from ._tasks import TaskFactory

    env = {**os.environ, **_dialer_env(redis_url, worker_url, prefix)}
    with contextlib.closing(Dialer.from_settings(Settings.from_env(env))) as dialer:
        tasks = TaskFactory()
        dialer.process(tasks.batch(10))  # warm: connections, scripts, threads
        _answer(channel, {"ready": True})
        for line in sys.stdin:
            command, *args = line.split()
            if command != "run":
                break
            batch = tasks.batch(int(args[0]))
            started = time.perf_counter()
            result = dialer.process(batch)
            seconds = time.perf_counter() - started
            _answer(channel, {"seconds": seconds, "successful": result["successful"]})


def import_time(modules: str) -> None:
    channel = _quiet_stdout()
    started = time.perf_counter()
    for module in modules.split(","):
        importlib.import_module(module)
    _answer(channel, {"seconds": time.perf_counter() - started})


def peak_rss(redis_url: str, worker_url: str, prefix: str, size: int) -> None:
    channel = _quiet_stdout()
    os.environ.update(_dialer_env(redis_url, worker_url, prefix))
    from dialer_lambda import handler

    from ._tasks import TaskFactory

    result = handler.handler(TaskFactory().batch(size))
    # Linux reports ru_maxrss in KiB.
    megabytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _answer(channel, {"megabytes": megabytes, "successful": result["successful"]})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest._probe")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("tracing")
    p.add_argument("--url", required=True)
    p.add_argument("--provider", choices=PROVIDERS, required=True)
    p.add_argument("--prefix", required=True)
    for name in ("dialer", "rss"):
        p = commands.add_parser(name)
        p.add_argument("--redis-url", required=True)
        p.add_argument("--worker-url", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--size", type=int, default=10)
    p = commands.add_parser("import")
    p.add_argument("--modules", required=True)
    args = parser.parse_args(argv)
    if args.command == "tracing":
        tracing(args.url, args.provider, args.prefix)
    elif args.command == "dialer":
        dialer(args.redis_url, args.worker_url, args.prefix)
    elif args.command == "rss":
        peak_rss(args.redis_url, args.worker_url, args.prefix, args.size)
    else:
        import_time(args.modules)


if __name__ == "__main__":
    main()
