"""One outage under a fleet: `run_outage` starts a redis-server, the worker stub and the
containers, lets them dial, breaks Redis, heals it, and collects what the stub and Redis saw."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtest.servers import ROOT, RedisServer, child_env, worker_stub_process
from loadtest.worker_stub import Call, RemoteStub

from .config import KILL, FleetConfig

COUNTER_POLL_SECONDS: Final = 0.2
COUNTER_AHEAD_SECONDS: Final = 4
"""Counters read past the current second: a paced grant reserves up to its wait budget (2 s)
ahead."""
REDIS_TIMEOUT: Final = 0.2
"""The counter reader's socket timeouts: it must not hang while Redis is stopped."""
READY_TIMEOUT: Final = 60.0
EXIT_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class OutageRun:
    """What one run showed: the calls as the stub stamped them, the counters Redis kept, when
    each phase began (unix seconds), and each container's counts."""

    config: FleetConfig
    calls: list[Call]
    counters: dict[int, int]
    start: float
    fault: float
    back: float
    end: float
    containers: list[dict[str, Any]]
    load: tuple[float, float, float]
    """The machine's load average (1, 5, 15 min) at the end of the run."""


@dataclass
class CounterPoll:
    """Reads the ``<prefix>:<ts>`` counters around the Redis clock's current second every
    `COUNTER_POLL_SECONDS`, keeping each second's highest value; a Redis that is stopped or
    gone is skipped, not waited for."""

    port: int
    prefix: str
    counters: dict[int, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis(
            port=self.port,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        with contextlib.closing(client):
            while not self.stop.wait(COUNTER_POLL_SECONDS):
                with contextlib.suppress(redis.RedisError, OSError):
                    self._read(client)
            with contextlib.suppress(redis.RedisError, OSError):
                self._read(client)

    def _read(self, client: redis.Redis) -> None:
        clock: tuple[int, int] = client.time()  # type: ignore[assignment]
        now = int(clock[0])
        seconds = range(now - 1, now + COUNTER_AHEAD_SECONDS + 1)
        keys = [f"{self.prefix}:{second}" for second in seconds]
        values: list[bytes | None] = client.mget(keys)  # type: ignore[assignment]
        for second, value in zip(seconds, values, strict=True):
            if value is not None:
                self.counters[second] = max(self.counters.get(second, 0), int(value))


def dialer_env(config: FleetConfig, redis_url: str, worker_url: str, prefix: str) -> dict[str, str]:
    """The environment each container's dialer is built from."""
    return {
        "REDIS_URL": redis_url,
        "NODE_WORKER_URL": worker_url,
        "MAX_CPS": str(config.max_cps),
        "CPS_FAIL_MODE": config.fail_mode,
        "CPS_KEY_PREFIX": prefix,
        "IDEMPOTENCY_KEY_PREFIX": f"{prefix}:claim",
        "LOG_LEVEL": config.log_level,
        **config.env,
    }


@contextlib.contextmanager
def containers(
    config: FleetConfig, env: Mapping[str, str]
) -> Iterator[list[subprocess.Popen[str]]]:
    """The containers, each built and ``ready``; killed if still running at the end."""
    processes: list[subprocess.Popen[str]] = []
    try:
        for index in range(config.containers):
            name = f"c{index}"
            command = [
                sys.executable, "-m", "loadtest.fleet.container",
                "--name", f"{name}-{uuid.uuid4().hex[:6]}",
                "--rate", repr(config.rate_per_container),
                "--log", str(config.out / f"{name}.log"),
                "--env", json.dumps(dict(env)),
            ]  # fmt: skip
            processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                    env=child_env(),
                )
            )
        for index, process in enumerate(processes):
            _expect_ready(process, config.out / f"c{index}.log")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _expect_ready(process: subprocess.Popen[str], log: Path) -> None:
    assert process.stdout is not None
    timer = threading.Timer(READY_TIMEOUT, process.kill)
    timer.start()
    try:
        line = process.stdout.readline().strip()
    finally:
        timer.cancel()
    if line != "ready":
        raise RuntimeError(f"a container did not start (said {line!r}); see {log}")


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _finish(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Each container's closing counts, once its last batch is over."""
    counts = []
    for process in processes:
        out, _ = process.communicate(timeout=EXIT_TIMEOUT)
        lines = out.strip().splitlines()
        counts.append(json.loads(lines[-1]) if lines else {"error": process.returncode})
    return counts


def _break(server: RedisServer, fault: str) -> None:
    if fault == KILL:
        server.kill()
    else:
        server.pause()


def _heal(server: RedisServer, fault: str) -> None:
    """Redis is back when this returns: resumed, or started again, empty, on its port."""
    if fault == KILL:
        server.start()
    else:
        server.resume()


def run_outage(config: FleetConfig) -> OutageRun:
    """Dial with the fleet, break Redis ``config.outage`` seconds after ``config.warm_up``,
    bring it back, dial ``config.after`` seconds more, and collect."""
    config.out.mkdir(parents=True, exist_ok=True)
    prefix = f"fleet{uuid.uuid4().hex[:8]}"
    server = RedisServer().start()
    poll = CounterPoll(server.port, prefix)
    try:
        with (
            worker_stub_process(log=config.out / "worker-stub.log") as url,
            RemoteStub(url) as stub,
        ):
            env = dialer_env(config, server.url, url, prefix)
            with containers(config, env) as processes:
                poller = threading.Thread(target=poll.run, name="fleet-counters", daemon=True)
                poller.start()
                start = time.time()
                end = start + config.warm_up + config.outage + config.after
                for process in processes:
                    assert process.stdin is not None
                    process.stdin.write(f"go {start!r} {end!r}\n")
                    process.stdin.flush()
                _sleep_until(start + config.warm_up)
                fault = time.time()
                _break(server, config.fault)
                _sleep_until(fault + config.outage)
                _heal(server, config.fault)
                back = time.time()
                _sleep_until(end)
                counts = _finish(processes)
                poll.stop.set()
                poller.join()
            calls = stub.calls_since(start - 1.0)
    finally:
        poll.stop.set()
        server.cleanup()
    return OutageRun(
        config=config,
        calls=calls,
        counters=dict(poll.counters),
        start=start,
        fault=fault,
        back=back,
        end=end,
        containers=counts,
        load=os.getloadavg(),
    )
