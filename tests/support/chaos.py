"""Fault injection at every boundary of a batch, and the pipe's redeliveries until nothing is
left: the harness behind tests/dialer/test_dialer_chaos.py and ``make chaos``.

A schedule, drawn from its seed, injects one fault at one occurrence of one boundary of the
first delivery:

- the Redis boundaries (claims, permits, a campaign's lease, the give-back) are faulted on the
  connection itself, so that the limiter and the claims meet them as they meet a real network:
  ``delay`` on the way there times the command out and lets it reach Redis later, ``delay`` on
  the way back lets Redis run it and times the reply out, ``lost`` lets Redis run it and drops
  the reply with the connection, ``raise`` raises what no library expects, ``kill`` ends the
  process;
- the POST's boundaries (connect, headers, body) are faulted in the worker client's transport;
- ``result`` is the batch's report, after everything was settled.

A killed process is every later boundary, on every thread, raising `Killed` (a BaseException):
nothing after it reaches Redis or the worker, as after a SIGKILL. The pipe then redelivers the
whole batch after the invocation's deadline; a batch that returned has its ``batchItemFailures``
redelivered, also after the deadline, as SQS does once the visibility timeout has passed.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import redis

BOUNDARIES: dict[str, tuple[str, ...]] = {
    "claims.send": ("raise", "delay", "kill"),
    "claims.reply": ("raise", "delay", "lost", "kill"),
    "permits.send": ("raise", "delay", "kill"),
    "permits.reply": ("raise", "delay", "lost", "kill"),
    "lease.send": ("raise", "delay", "kill"),
    "lease.reply": ("raise", "delay", "lost", "kill"),
    "post.connect": ("raise", "delay", "lost", "kill"),
    "post.headers": ("raise", "delay", "lost", "kill"),
    "post.body": ("raise", "delay", "lost", "kill"),
    "give_back.send": ("raise", "delay", "kill"),
    "give_back.reply": ("raise", "delay", "lost", "kill"),
    "result": ("raise", "kill"),
}
COMBINATIONS = [(b, f) for b, faults in BOUNDARIES.items() for f in faults]
OCCURRENCES = {"post": 10, "give_back": 3}
"""How many times a boundary may be met in a batch: each POST of ten, the marks and the
give-back; the others once (a second permits call comes only when the first fell short)."""
LATE_SECONDS = 0.3
"""How late a delayed Redis command reaches the server: past the client's timeout."""


class Killed(BaseException):
    """The process died: raised at every boundary once the fault killed it."""


class InjectedError(RuntimeError):
    """An exception no step expects."""


@dataclass
class Schedule:
    """One fault at one occurrence of one boundary, from ``seed``."""

    seed: int
    boundary: str
    fault: str
    occurrence: int
    limited: bool
    """Whether the campaign has maxConcurrentCalls (its permits come with leases)."""

    @classmethod
    def of(cls, seed: int) -> Schedule:
        """Seeds go round every (boundary, fault) in turn; the rest is drawn from the seed."""
        rng = random.Random(seed)
        boundary, fault = COMBINATIONS[seed % len(COMBINATIONS)]
        # A campaign with maxConcurrentCalls takes its permits with its lease, in one call.
        kind = boundary.split(".")[0]
        limited = kind == "lease" or (kind != "permits" and rng.random() < 0.5)
        occurrence = rng.randint(1, OCCURRENCES.get(kind, 1))
        return cls(seed, boundary, fault, occurrence, limited)

    def __str__(self) -> str:
        kind = "leased" if self.limited else "plain"
        return f"seed {self.seed}: {self.fault} at {self.boundary} #{self.occurrence} ({kind})"


@dataclass
class Injector:
    """Counts each boundary's occurrences and fires the schedule's fault once; after a kill,
    every boundary raises `Killed`."""

    schedule: Schedule
    armed: bool = True
    dead: bool = False
    fired: bool = False
    seen: dict[str, int] = field(default_factory=dict)
    replays: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault_at(self, boundary: str) -> str | None:
        """The fault to inject at this occurrence of ``boundary`` (None: none)."""
        with self.lock:
            if self.dead:
                raise Killed(boundary)
            if not self.armed or boundary != self.schedule.boundary:
                return None
            self.seen[boundary] = self.seen.get(boundary, 0) + 1
            if self.fired or self.seen[boundary] != self.schedule.occurrence:
                return None
            self.fired = True
            return self.schedule.fault

    def die(self, boundary: str) -> None:
        with self.lock:
            self.dead = True
        raise Killed(boundary)

    def check(self, boundary: str) -> None:
        """A boundary where only ``raise`` and ``kill`` apply."""
        fault = self.fault_at(boundary)
        if fault == "kill":
            self.die(boundary)
        if fault == "raise":
            raise InjectedError(boundary)

    def replay_late(self, host: str, port: int, packed: bytes) -> None:
        """Send ``packed`` to Redis `LATE_SECONDS` from now, on a connection of its own."""

        def late() -> None:
            time.sleep(LATE_SECONDS)
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.sendall(packed)
                sock.settimeout(0.2)
                try:
                    while sock.recv(65536):
                        pass
                except TimeoutError:
                    pass

        thread = threading.Thread(target=late, daemon=True)
        thread.start()
        self.replays.append(thread)

    def settle(self) -> None:
        for thread in self.replays:
            thread.join()


def redis_boundary(packed: bytes, claim_prefix: bytes) -> str | None:
    """Which boundary a command (or a pipeline of them) belongs to, from its bytes."""
    if claim_prefix in packed and b"NX" in packed:
        return "claims"
    # The claims' own scripts (give back, mark sent) and freeing leases: the settling.
    if b'return redis.call("DEL"' in packed or b'ARGV[2], "EX"' in packed:
        return "give_back"
    if b"$4\r\nZREM\r\n" in packed:
        return "give_back"
    if b"$7\r\nEVALSHA\r\n" in packed or b"$4\r\nEVAL\r\n" in packed:
        return "lease" if b":leases" in packed else "permits"
    return None


class FaultyConnection(redis.Connection):
    """A Redis connection that meets the schedule's fault; subclassed per schedule."""

    injector: ClassVar[Injector]
    claim_prefix: ClassVar[bytes]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reply_fault: tuple[str, str] | None = None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        injector = self.injector
        if injector.dead:
            raise Killed("send")
        packed = command if isinstance(command, bytes) else b"".join(command)
        boundary = redis_boundary(packed, self.claim_prefix)
        if boundary is not None:
            fault = injector.fault_at(f"{boundary}.send")
            if fault == "kill":
                injector.die(f"{boundary}.send")
            if fault == "raise":
                raise InjectedError(f"{boundary}.send")
            if fault == "delay":
                injector.replay_late(self.host, self.port, packed)
                raise redis.TimeoutError(f"injected: {boundary} reaches Redis late")
            reply_fault = injector.fault_at(f"{boundary}.reply")
            self._reply_fault = None if reply_fault is None else (boundary, reply_fault)
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self.injector.dead:
            raise Killed("read")
        reply = super().read_response(*args, **kwargs)
        if self._reply_fault is not None:
            (boundary, fault), self._reply_fault = self._reply_fault, None
            # Redis ran the command: its reply (the first of a pipeline's) has come back.
            self.disconnect()
            if fault == "kill":
                self.injector.die(f"{boundary}.reply")
            if fault == "raise":
                raise InjectedError(f"{boundary}.reply")
            if fault == "delay":
                raise redis.TimeoutError(f"injected: the reply to {boundary} came too late")
            raise redis.ConnectionError(f"injected: the reply to {boundary} was lost")
        return reply


def faulty_connection(injector: Injector, claim_prefix: str) -> type[FaultyConnection]:
    return type(
        "ScheduledConnection",
        (FaultyConnection,),
        {"injector": injector, "claim_prefix": claim_prefix.encode()},
    )


class _FailingBody(httpx.SyncByteStream):
    def __init__(self, error: BaseException) -> None:
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        raise self._error


class FaultyTransport(httpx.HTTPTransport):
    """The worker client's transport, meeting the schedule's fault at a POST's boundaries."""

    def __init__(self, injector: Injector, timeout: float) -> None:
        super().__init__()
        self._injector = injector
        self._timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self._injector.fault_at("post.connect")
        if fault is not None:
            raise self._error(fault, "connect", request, sent=False)
        response = super().handle_request(request)
        fault = self._injector.fault_at("post.headers")
        if fault is not None:
            response.close()
            raise self._error(fault, "headers", request, sent=True)
        fault = self._injector.fault_at("post.body")
        if fault is not None:
            response.read()
            response.close()
            error = self._error(fault, "body", request, sent=True)
            return httpx.Response(
                response.status_code, headers=response.headers, stream=_FailingBody(error)
            )
        return response

    def _error(
        self, fault: str, phase: str, request: httpx.Request, *, sent: bool
    ) -> BaseException:
        if fault == "kill":
            self._injector.die(f"post.{phase}")
        if fault == "raise":
            return InjectedError(f"post.{phase}")
        if fault == "delay":
            time.sleep(self._timeout * 1.2)
            kind = httpx.ReadTimeout if sent else httpx.ConnectTimeout
            return kind(f"injected: {phase} past the timeout", request=request)
        kind2 = httpx.RemoteProtocolError if sent else httpx.ConnectError
        return kind2(f"injected: {phase} lost", request=request)


@dataclass
class FaultyMetrics:
    """The batch's report, the last boundary: the schedule's fault before the real one."""

    inner: Any
    injector: Injector

    def record(self, metrics: Any) -> None:
        self.injector.check("result")
        self.inner.record(metrics)


def with_faults(dialer: Any, injector: Injector) -> Any:
    return dataclasses.replace(dialer, metrics=FaultyMetrics(dialer.metrics, injector))
