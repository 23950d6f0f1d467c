"""One simulated campaign, start to end: `run_simulation`, and `main` for the command line."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, TextIO

import httpx

from dialer_lambda import Dialer, Settings
from dialer_lambda._logging import JsonFormatter, StdoutHandler
from loadtest.servers import worker_stub_process
from loadtest.tasks import make_tasks
from loadtest.worker_stub import Call, CallEnds, RemoteStub, StubHandle, StubHealth

from .campaigns import CallEndWatch, campaign_figures
from .carrier import carrier_figures, refusal_relay, stub_arguments
from .config import Hooks, SimulationConfig, parse_args
from .counters import CounterWatch, ahead_of
from .measure import measure_pace
from .monitor import Monitor, limit_in_force
from .pipe import HandlerFunction, Message, Pipe, invoke_until_drained
from .progress import progress_bar
from .summary import Summary, changes_of

LIMITER_LOGGER: Final = "cps_limiter"


@contextlib.contextmanager
def build_dialer(env: Mapping[str, str]) -> Iterator[Dialer]:
    """The dialer for the run, built from `env` as the Lambda builds its own, and released
    after it."""
    dialer = Dialer.from_settings(Settings.from_env(env))
    try:
        yield dialer
    finally:
        dialer.close()


def run_simulation(config: SimulationConfig, hooks: Hooks | None = None) -> Summary:
    """Run one simulated campaign and return its summary (the chart is written to `out`)."""
    hooks = hooks or Hooks()
    run_id = uuid.uuid4().hex[:8]
    lasting = config.call_seconds is not None
    tasks = make_tasks(
        config.tasks,
        seed=config.seed,
        run_id=run_id,
        invalid_rate=config.invalid_rate,
        campaigns=config.campaigns,
        config={"maxConcurrentCalls": config.max_concurrent_calls} if lasting else None,
    )
    duplicated = set(
        random.Random(config.seed + 1).sample(
            range(config.tasks), round(config.tasks * config.duplicate_rate)
        )
    )
    messages = [
        Message(task, task["messageId"], duplicate_pending=index in duplicated)
        for index, task in enumerate(tasks)
    ]
    handler_log = config.out / f"handler-{config.strategy}.log"
    progress = progress_bar(config)
    pipe = Pipe(
        messages,
        max_receive_count=config.max_receive_count,
        visibility_timeout=config.visibility_timeout,
        on_settled=progress.update,
    )

    with _worker(config) as stub, _handler_output_to(handler_log):
        prefix = config.key_prefix or f"cps-sim-{run_id}"
        env = config.handler_env(stub.url, prefix)
        with build_dialer(env) as dialer:
            limiter = dialer.limiter

            relay = refusal_relay(limiter)

            def report(health: StubHealth) -> None:
                limiter.report_health(cpu=health.cpu_percent, answer_rate=health.answer_rate)
                relay(health)

            counters = CounterWatch(
                limiter.client,
                limiter.key_base(),
                ahead=ahead_of(dialer.settings.rate_limit_max_wait),
            )
            counters.begin()
            started = time.time()
            monitor = Monitor(
                stub,
                on_health=hooks.on_health or report,
                limit_in_force=hooks.limit_in_force or (lambda: limit_in_force(limiter)),
                started=started,
                cpu_spike_at=config.cpu_spike_at,
                cpu_spike_percent=config.cpu_spike_percent,
            )
            watchers: list[Watcher] = [monitor, counters]
            ends = None
            if config.call_seconds is not None:
                ends = CallEnds(limiter.client, config.call_seconds, prefix)
                watchers.append(CallEndWatch(stub, ends, config.call_seconds, started))
            with _collector_frozen():
                _drain(pipe, dialer.process, watchers, config)
            wall = time.time() - started
            if ends is not None:
                ends.close()
        calls = _calls_of(stub, started)
    progress.close()

    campaign_peaks, campaign_chart = campaign_figures(config, calls, started)
    tally = pipe.tally
    return Summary(
        strategy=config.strategy,
        max_cps=config.max_cps,
        tasks=config.tasks,
        concurrency=config.concurrency,
        batch_size=config.batch_size,
        invocations=tally.invocations,
        invocation_errors=tally.invocation_errors,
        deliveries=tally.deliveries,
        successful=tally.outcomes["successful"],
        failed=tally.outcomes["failed"],
        rate_limited=tally.outcomes["rateLimited"],
        duplicates=tally.outcomes["duplicates"],
        settled=tally.settled,
        dead_letter_reasons=dict(tally.dead_letter_reasons),
        redeliveries=tally.redeliveries,
        redelivered_tasks=len(tally.redelivered),
        duplicate_deliveries=tally.duplicate_deliveries,
        redis_unavailable=_redis_unavailable(handler_log),
        limit_changes=changes_of(monitor.limits),
        cpu_spiked_at=monitor.spiked_at,
        wall_seconds=wall,
        pace=None
        if calls is None
        else measure_pace(
            config,
            calls,
            started,
            monitor,
            demand_fell=pipe.ran_dry_at,
            max_counter=counters.highest(),
        ),
        handler_log=handler_log,
        counter_stalls=counters.stalls,
        campaign_peaks=campaign_peaks,
        campaign_limit=config.max_concurrent_calls if config.call_seconds is not None else None,
        campaign_chart=campaign_chart,
        carrier=config.carrier,
        carrier_figures=None
        if config.carrier is None or calls is None
        else carrier_figures(
            config.carrier,
            calls,
            monitor.limits,
            started,
            config.out / f"carrier-{config.strategy}.png",
        ),
    )


Watcher = Monitor | CounterWatch | CallEndWatch


def _drain(
    pipe: Pipe,
    handler: HandlerFunction,
    watchers: Sequence[Watcher],
    config: SimulationConfig,
) -> None:
    """`config.concurrency` invocations take batches until the pipe is empty, while the
    watchers sample."""
    watching = [
        threading.Thread(target=watcher.run, name=f"sim-{type(watcher).__name__}", daemon=True)
        for watcher in watchers
    ]
    invocations = [
        threading.Thread(
            target=invoke_until_drained,
            args=(pipe, handler, config.batch_size),
            name=f"sim-invocation-{n}",
            daemon=True,
        )
        for n in range(config.concurrency)
    ]
    for thread in [*watching, *invocations]:
        thread.start()
    for thread in invocations:
        thread.join()
    for watcher in watchers:
        watcher.stop.set()
    for thread in watching:
        thread.join()


@contextlib.contextmanager
def _collector_frozen() -> Iterator[None]:
    """Leave what exists before the run (modules, tasks, clients) out of the garbage
    collector's full passes while it lasts: a full pass over all of it stops every thread for
    tens of milliseconds, and the dials held up go out together as a burst of the harness's
    making."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _worker(config: SimulationConfig) -> Iterator[StubHandle]:
    """The worker given by URL, or the stub in a process of its own: it stamps each arrival
    on its own threads, which this process's invocations and dials do not hold up."""
    if config.worker_url is not None:
        with RemoteStub(config.worker_url) as remote:
            yield remote
        return
    log = config.out / "worker-stub.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    extra = stub_arguments(config.carrier)
    with worker_stub_process(log=log, extra=extra) as url, RemoteStub(url) as remote:
        remote.set_behaviour(delay_ms=config.worker_delay_ms, fail=config.worker_fail_rate)
        yield remote


@contextlib.contextmanager
def _handler_output_to(path: Path) -> Iterator[None]:
    """Send the handler's output to a file while the run lasts: its JSON logs and EMF lines
    (stdout), and the limiter's warnings, which outside Lambda would go to stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    limiter_logger = logging.getLogger(LIMITER_LOGGER)
    added: logging.Handler | None = None
    propagate = limiter_logger.propagate
    if not any(isinstance(h, StdoutHandler) for h in limiter_logger.handlers):
        added = StdoutHandler()
        added.setFormatter(JsonFormatter())
        limiter_logger.addHandler(added)
        limiter_logger.propagate = False
    try:
        with path.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            yield
    finally:
        if added is not None:
            limiter_logger.removeHandler(added)
            limiter_logger.propagate = propagate


def _redis_unavailable(handler_log: Path) -> int:
    """The RedisUnavailable metric summed over the EMF lines of the run."""
    total = 0
    with handler_log.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith('{"_aws"'):
                total += int(json.loads(line).get("RedisUnavailable", 0))
    return total


def _calls_of(stub: StubHandle, since: float) -> list[Call] | None:
    try:
        return stub.calls_since(since)
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return None


def main(
    argv: Sequence[str] | None = None, *, hooks: Hooks | None = None, out: TextIO | None = None
) -> Summary:
    """Run the simulation the command line asks for, print its summary, and return it."""
    summary = run_simulation(parse_args(argv), hooks)
    print(summary.render(), file=out or sys.stdout)
    return summary
