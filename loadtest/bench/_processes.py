"""The comparisons that need processes of their own: the cost of tracing (a tracer provider is
set once per process), and the dialer's handler against the worker stub: a batch's time, the
cold start, the peak memory."""

from __future__ import annotations

from collections.abc import Callable

from loadtest._probe import SAMPLED_RATIO
from loadtest._tasks import BATCH
from loadtest.runtime.process import cold_start_seconds
from loadtest.servers import worker_stub_process

from ._measure import Comparison, Contender, Session
from ._probes import Child, run_once

WORKER_DELAY_MS = 100
RSS_SAMPLES = 3
TRACING_VARIANTS = {
    "none": "OpenTelemetry API, no SDK",
    "batch": "OpenTelemetry SDK, BatchSpanProcessor",
    "sampled": f"OpenTelemetry SDK, {SAMPLED_RATIO:.0%} sampled, BatchSpanProcessor",
}
"""The tracer providers of `loadtest._probe`, each against no telemetry code at all."""
FLOOR = "a bare span per decision (the SDK's floor)"
"""What any code that makes one span per decision costs at least: a span started and ended,
with no attributes and not made current."""


def tracing(session: Session) -> None:
    for provider, label in TRACING_VARIANTS.items():
        child = Child(
            "tracing",
            "--url",
            session.url,
            "--provider",
            provider,
            "--prefix",
            session.prefix(provider),
        )
        session.stack.callback(child.close)

        def sample(state: str, child: Child = child) -> Callable[[], float]:
            return lambda: float(child.ask(f"run {session.slice} {state}")["rate"])

        session.add(
            Comparison(
                f"tracing-{provider}",
                f"Tracing cost: {label}, against no telemetry code in the same process",
                "ops/s",
                "telemetry taken out",
                [
                    Contender("telemetry taken out", sample("off")),
                    Contender(label, sample("on")),
                    Contender(FLOOR, sample("floor")),
                ],
                session.rounds,
            )
        )


def dialer(session: Session) -> None:
    worker = session.stack.enter_context(worker_stub_process(WORKER_DELAY_MS))
    _batches(session, worker)
    _cold_start(session)
    _runtime_cold_start(session, worker)
    _peak_memory(session, worker)


def _batches(session: Session, worker: str) -> None:
    child = Child(
        "dialer",
        "--redis-url",
        session.url,
        "--worker-url",
        worker,
        "--prefix",
        session.prefix("d"),
    )
    session.stack.callback(child.close)

    def batch(size: int) -> Callable[[], float]:
        def measure() -> float:
            answer = child.ask(f"run {size}")
            if answer["successful"] != size:
                raise AssertionError(f"a batch of {size} had failures: {answer}")
            return float(answer["seconds"]) * 1000

        return measure

    session.add(
        Comparison(
            "dialer",
            f"Dialer: a batch against a worker answering in {WORKER_DELAY_MS} ms",
            "ms",
            "one dial (batch of 1)",
            [
                Contender("one dial (batch of 1)", batch(1)),
                Contender(f"batch of {BATCH}", batch(BATCH)),
            ],
            session.process_rounds * 2,
            higher_is_better=False,
        )
    )


def _cold_start(session: Session) -> None:
    run_once("import", "--modules", "dialer_lambda.handler")  # writes bytecode caches

    def imports(modules: str) -> Callable[[], float]:
        return lambda: float(run_once("import", "--modules", modules)["seconds"]) * 1000

    session.add(
        Comparison(
            "import",
            "Cold start: import in a fresh interpreter",
            "ms",
            "import redis, httpx",
            [
                Contender("import redis, httpx", imports("redis,httpx")),
                Contender("import dialer_lambda.handler", imports("dialer_lambda.handler")),
            ],
            session.process_rounds,
            higher_is_better=False,
        )
    )


def _runtime_cold_start(session: Session, worker: str) -> None:
    """As Lambda starts a container: the runtime client, the handler's import and clients, and
    a first one-task batch, timed to its response on the Runtime API."""

    def cold() -> float:
        prefix = session.prefix("c")
        env = {
            "REDIS_URL": session.url,
            "NODE_WORKER_URL": worker,
            "CPS_KEY_PREFIX": f"{prefix}-cps",
            "IDEMPOTENCY_KEY_PREFIX": f"{prefix}-claim",
        }
        return cold_start_seconds(env) * 1000

    session.add(
        Comparison(
            "runtime-cold-start",
            "Cold start under the Lambda runtime client (awslambdaric): process start to the "
            "first batch's response",
            "ms",
            "first response",
            [Contender("first response", cold, note="Runtime API emulator on loopback")],
            session.process_rounds,
            higher_is_better=False,
        )
    )


def _peak_memory(session: Session, worker: str) -> None:
    def rss() -> float:
        answer = run_once(
            "rss",
            "--redis-url",
            session.url,
            "--worker-url",
            worker,
            "--prefix",
            session.prefix("r"),
        )
        return float(answer["megabytes"])

    session.add(
        Comparison(
            "rss",
            f"Peak memory of a process that handled a batch of {BATCH}",
            "MB",
            "handler process",
            [Contender("handler process", rss, note="resource.getrusage ru_maxrss")],
            RSS_SAMPLES,
            higher_is_better=False,
        )
    )
