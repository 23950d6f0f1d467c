"""A stand-in for the Node.js worker that places calls through Asterisk.

`POST /dial` records each dial command and answers as the seed shows. It can be told to
misbehave, per phone number or for a fraction of requests: be slow, fail, hang past any client
timeout, answer 429/503/500, answer garbage, stream a huge body, or drop the connection.

Python: ``with WorkerStub() as stub: ...`` (a free port, a background thread).
Other processes: ``python -m loadtest.worker_stub --port 3000 --fail-rate 0.1`` and the
HTTP control endpoints ``POST /_control``, ``GET /_calls``, ``DELETE /_calls``, ``GET /_health``.
``GET /health`` is the worker's own simulated health (CPU, answer rate) for the adaptive pace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Protocol, Self, TypedDict, Unpack
from urllib.parse import parse_qs, urlsplit

import httpx

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 3000
# Longer than any sensible dial timeout (DIAL_TIMEOUT_SECONDS defaults to 5) yet bounded, so a
# forgotten hanging request cannot keep a test process alive for long.
DEFAULT_HANG_SECONDS: Final = 30.0
DEFAULT_HUGE_BYTES: Final = 8 * 1024 * 1024
DEFAULT_ERROR: Final = "Asterisk originate failed"
DEFAULT_CPU_PERCENT: Final = 35.0
DEFAULT_ANSWER_RATE: Final = 0.6
MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024
# The default backlog of 5 drops SYNs when hundreds of dials arrive at once, and a dropped SYN
# costs the client a one-second retransmit: a latency spike the real worker would not show.
LISTEN_BACKLOG: Final = 1024
STREAM_CHUNK_BYTES: Final = 64 * 1024
SERVE_POLL_SECONDS: Final = 0.05
REMOTE_TIMEOUT_SECONDS: Final = 10.0

# Weyl sequences: the n-th request's fraction is frac(n * alpha). They are spread evenly over
# [0, 1), so "a rate of 0.1" is about every tenth request, reproducibly, with no random seed.
_FAULT_STEP: Final = (math.sqrt(5.0) - 1.0) / 2.0
_DELAY_STEP: Final = math.sqrt(2.0) - 1.0
_RATE_SUM_SLACK: Final = 1e-9


class Outcome(StrEnum):
    """What the stub did with one request to `/dial`."""

    OK = "ok"
    FAIL = "fail"
    TIMEOUT = "timeout"
    HTTP_429 = "http_429"
    HTTP_503 = "http_503"
    HTTP_500 = "http_500"
    GARBAGE = "garbage"
    HUGE = "huge"
    CLOSE = "close"
    BAD_REQUEST = "bad_request"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class BehaviourFields(TypedDict, total=False):
    """Keyword arguments of `Behaviour`, for `set_behaviour(**fields)`."""

    delay_ms: float
    delay_rate: float
    fail: float
    timeout: float
    http_429: float
    http_503: float
    http_500: float
    garbage: float
    huge: float
    close: float
    hang_seconds: float
    huge_bytes: int
    error: str


@dataclass(frozen=True)
class Behaviour:
    """How the stub answers; each fault field is the fraction of requests (0..1) that get it.

    The fault fractions add up to at most 1; the rest are answered normally. `delay_ms` is added
    before the answer (faults included) to a `delay_rate` fraction of requests.
    """

    delay_ms: float = 0.0
    delay_rate: float = 1.0
    fail: float = 0.0
    timeout: float = 0.0
    http_429: float = 0.0
    http_503: float = 0.0
    http_500: float = 0.0
    garbage: float = 0.0
    huge: float = 0.0
    close: float = 0.0
    hang_seconds: float = DEFAULT_HANG_SECONDS
    huge_bytes: int = DEFAULT_HUGE_BYTES
    error: str = DEFAULT_ERROR

    def __post_init__(self) -> None:
        if not _is_number(self.delay_ms) or not math.isfinite(self.delay_ms) or self.delay_ms < 0:
            raise ValueError(f"delay_ms must be a finite number >= 0, got {self.delay_ms!r}")
        for name in ("delay_rate", *(_FAULT_FIELDS.values())):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")
        total = sum(rate for _, rate in self.fault_rates())
        if total > 1.0 + _RATE_SUM_SLACK:
            raise ValueError(f"the fault fractions add up to {total:g}, more than 1")
        if (
            not _is_number(self.hang_seconds)
            or not math.isfinite(self.hang_seconds)
            or self.hang_seconds <= 0
        ):
            raise ValueError(f"hang_seconds must be a number > 0, got {self.hang_seconds!r}")
        if not isinstance(self.huge_bytes, int) or isinstance(self.huge_bytes, bool):
            raise ValueError(f"huge_bytes must be an int, got {self.huge_bytes!r}")
        if self.huge_bytes <= 0:
            raise ValueError(f"huge_bytes must be > 0, got {self.huge_bytes}")
        if not isinstance(self.error, str):
            raise ValueError(f"error must be a string, got {self.error!r}")

    def fault_rates(self) -> tuple[tuple[Outcome, float], ...]:
        return tuple((outcome, getattr(self, name)) for outcome, name in _FAULT_FIELDS.items())

    def plan(self, sequence_number: int) -> tuple[float, Outcome]:
        """The delay (seconds) and outcome for the `sequence_number`-th request (from 1)."""
        delay_point = (sequence_number * _DELAY_STEP) % 1.0
        delay = self.delay_ms / 1000.0 if delay_point < self.delay_rate else 0.0
        fault_point = (sequence_number * _FAULT_STEP) % 1.0
        edge = 0.0
        for outcome, rate in self.fault_rates():
            edge += rate
            if rate > 0.0 and fault_point < edge:
                return delay, outcome
        return delay, Outcome.OK

    def to_json(self) -> dict[str, object]:
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, object], base: Behaviour | None = None) -> Behaviour:
        """A behaviour from camelCase JSON (`delayMs`, `http503`, ...); missing keys keep `base`."""
        names = {_camel(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown behaviour keys {unknown}; known: {sorted(names)}")
        changes: dict[str, Any] = {names[key]: value for key, value in data.items()}
        return replace(base or cls(), **changes)


_FAULT_FIELDS: Final[Mapping[Outcome, str]] = {
    Outcome.FAIL: "fail",
    Outcome.TIMEOUT: "timeout",
    Outcome.HTTP_429: "http_429",
    Outcome.HTTP_503: "http_503",
    Outcome.HTTP_500: "http_500",
    Outcome.GARBAGE: "garbage",
    Outcome.HUGE: "huge",
    Outcome.CLOSE: "close",
}


@dataclass(frozen=True)
class Call:
    """One request the stub received on `/dial`, stamped when it arrived."""

    at: float
    """Unix time (seconds) of arrival."""
    monotonic: float
    """`time.monotonic()` at arrival, in the stub's process."""
    outcome: Outcome
    delay: float
    body: Mapping[str, object] | None
    """The JSON object received, or None when the body was not one."""

    @property
    def phone_number(self) -> str | None:
        value = self.body.get("phoneNumber") if self.body is not None else None
        return value if isinstance(value, str) else None

    @property
    def call_id(self) -> str | None:
        value = self.body.get("callId") if self.body is not None else None
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "monotonic": self.monotonic,
            "outcome": self.outcome.value,
            "delay": self.delay,
            "body": None if self.body is None else dict(self.body),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        body = data["body"]
        return cls(
            at=float(data["at"]),
            monotonic=float(data["monotonic"]),
            outcome=Outcome(data["outcome"]),
            delay=float(data["delay"]),
            body=body if isinstance(body, dict) else None,
        )


@dataclass(frozen=True)
class StubHealth:
    """The worker's own (simulated) health, as `GET /health` reports it."""

    cpu_percent: float
    answer_rate: float
    calls_last_second: int
    taken_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "status": "ok",
            "cpuPercent": self.cpu_percent,
            "answerRate": self.answer_rate,
            "callsLastSecond": self.calls_last_second,
            "takenAt": self.taken_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StubHealth:
        return cls(
            cpu_percent=float(data["cpuPercent"]),
            answer_rate=float(data["answerRate"]),
            calls_last_second=int(data["callsLastSecond"]),
            taken_at=float(data["takenAt"]),
        )


def _in_range(value: object, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low <= value <= high


def _check_health(cpu_percent: object, answer_rate: object) -> None:
    if cpu_percent is not None and not _in_range(cpu_percent, 0.0, 100.0):
        raise ValueError(f"cpuPercent must be between 0 and 100, got {cpu_percent!r}")
    if answer_rate is not None and not _in_range(answer_rate, 0.0, 1.0):
        raise ValueError(f"answerRate must be between 0 and 1, got {answer_rate!r}")


class StubHandle(Protocol):
    """What a simulation needs from a worker stub, in this process or behind a URL."""

    @property
    def url(self) -> str: ...

    def calls_since(self, at: float) -> list[Call]: ...

    def health(self) -> StubHealth: ...

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None: ...


class WorkerStub:
    """The stub server, run in a background thread of this process.

    `reset()` goes back to the behaviour and health given here and empties the record.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        behaviour: Behaviour | None = None,
        *,
        cpu_percent: float = DEFAULT_CPU_PERCENT,
        answer_rate: float = DEFAULT_ANSWER_RATE,
    ) -> None:
        _check_health(cpu_percent, answer_rate)
        self._initial = (behaviour or Behaviour(), cpu_percent, answer_rate)
        self._lock = threading.Lock()
        self._default = self._initial[0]
        self._per_phone: dict[str, Behaviour] = {}
        self._sequence: dict[str | None, int] = {}
        self._calls: list[Call] = []
        self._cpu_percent = cpu_percent
        self._answer_rate = answer_rate
        self._stopping = threading.Event()
        self._server = _StubServer((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a WorkerStub starts once")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_SECONDS},
            name=f"worker-stub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still hanging or streaming are cut short."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # configuration

    def set_behaviour(
        self,
        phone: str | None = None,
        behaviour: Behaviour | None = None,
        **changes: Unpack[BehaviourFields],
    ) -> Behaviour:
        """Set the behaviour for `phone` (or the default one for every other number).

        `changes` apply on top of `behaviour`, or of a well-behaved worker when it is None.
        """
        chosen = replace(behaviour or Behaviour(), **changes)
        with self._lock:
            if phone is None:
                self._default = chosen
            else:
                self._per_phone[phone] = chosen
            self._sequence.pop(phone, None)
        return chosen

    def clear_behaviour(self, phone: str) -> None:
        with self._lock:
            self._per_phone.pop(phone, None)
            self._sequence.pop(phone, None)

    def behaviour(self, phone: str | None = None) -> Behaviour:
        with self._lock:
            return self._per_phone.get(phone, self._default) if phone else self._default

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None:
        _check_health(cpu_percent, answer_rate)
        with self._lock:
            if cpu_percent is not None:
                self._cpu_percent = float(cpu_percent)
            if answer_rate is not None:
                self._answer_rate = float(answer_rate)

    def reset(self) -> None:
        with self._lock:
            self._default, self._cpu_percent, self._answer_rate = self._initial
            self._per_phone.clear()
            self._sequence.clear()
            self._calls.clear()

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # observation

    @property
    def calls(self) -> list[Call]:
        """Every request to `/dial` so far, in order of arrival."""
        with self._lock:
            return list(self._calls)

    def calls_since(self, at: float) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if call.at >= at]

    def health(self) -> StubHealth:
        now = time.monotonic()
        with self._lock:
            recent = 0
            for call in reversed(self._calls):
                if call.monotonic < now - 1.0:
                    break
                recent += 1
            return StubHealth(self._cpu_percent, self._answer_rate, recent, time.time())

    def state_json(self) -> dict[str, object]:
        with self._lock:
            return {
                "default": self._default.to_json(),
                "phones": {phone: b.to_json() for phone, b in self._per_phone.items()},
                "cpuPercent": self._cpu_percent,
                "answerRate": self._answer_rate,
                "calls": len(self._calls),
            }

    # used by the request handler

    def _admit(self, arrived: float, body: Mapping[str, object]) -> tuple[Call, Behaviour]:
        """Decide what to do with one dial and record it, under one lock."""
        phone = body.get("phoneNumber")
        with self._lock:
            key = phone if isinstance(phone, str) and phone in self._per_phone else None
            behaviour = self._per_phone[key] if key is not None else self._default
            number = self._sequence.get(key, 0) + 1
            self._sequence[key] = number
            delay, outcome = behaviour.plan(number)
            call = Call(arrived, time.monotonic(), outcome, delay, body)
            self._calls.append(call)
        return call, behaviour

    def _record_bad_request(self, arrived: float) -> None:
        with self._lock:
            self._calls.append(Call(arrived, time.monotonic(), Outcome.BAD_REQUEST, 0.0, None))

    def _control(self, request: Mapping[str, object]) -> None:
        """Apply one `POST /_control` body; raises ValueError on a bad one, changing nothing."""
        known = {"reset", "clearCalls", "phone", "behaviour", "cpuPercent", "answerRate"}
        unknown = sorted(set(request) - known)
        if unknown:
            raise ValueError(f"unknown control keys {unknown}; known: {sorted(known)}")
        phone = request.get("phone")
        if phone is not None and not isinstance(phone, str):
            raise ValueError("phone must be a string")
        cpu, answer = request.get("cpuPercent"), request.get("answerRate")
        _check_health(cpu, answer)
        behaviour: Behaviour | None = None
        if "behaviour" in request and request["behaviour"] is not None:
            spec = request["behaviour"]
            if not isinstance(spec, dict):
                raise ValueError("behaviour must be a JSON object")
            behaviour = Behaviour.from_json(spec)
        if request.get("reset") is True:
            self.reset()
        if request.get("clearCalls") is True:
            self.clear_calls()
        if behaviour is not None:
            self.set_behaviour(phone, behaviour)
        elif "behaviour" in request and phone is not None:
            self.clear_behaviour(phone)
        self.set_health(
            cpu_percent=float(cpu) if isinstance(cpu, int | float) else None,
            answer_rate=float(answer) if isinstance(answer, int | float) else None,
        )


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], stub: WorkerStub
    ) -> None:
        self.stub = stub
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _StubServer
    # Keep-alive, as the real worker behind a pooled client; every answer sets Content-Length.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK and every answer takes 40 ms longer than the worker asked for.
    disable_nagle_algorithm = True
    server_version = "dialer-worker-stub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: one stderr line per dial would drown any output."""

    @property
    def _stub(self) -> WorkerStub:
        return self.server.stub

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send_json(HTTPStatus.OK, self._stub.health().to_json())
        elif url.path == "/_health":
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        elif url.path == "/_calls":
            since = parse_qs(url.query).get("since", ["0"])[0]
            try:
                calls = self._stub.calls_since(float(since))
            except ValueError:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": "since must be a number"})
                return
            self._send_json(HTTPStatus.OK, {"calls": [call.to_json() for call in calls]})
        elif url.path == "/_control":
            self._send_json(HTTPStatus.OK, self._stub.state_json())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route GET {url.path}"})

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path == "/_calls":
            self._stub.clear_calls()
            self._send_json(HTTPStatus.OK, {"calls": 0})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route DELETE {self.path}"})

    def do_POST(self) -> None:
        arrived = time.time()
        path = urlsplit(self.path).path
        raw = self._read_body()
        if raw is None:
            return
        if path == "/dial":
            self._dial(arrived, raw)
        elif path == "/_control":
            self._control(raw)
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route POST {path}"})

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"success": False, "error": f"Content-Length must be 0..{MAX_REQUEST_BYTES}"},
            )
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _dial(self, arrived: float, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._stub._record_bad_request(arrived)
            self._send_json(
                HTTPStatus.BAD_REQUEST, {"success": False, "error": "body must be a JSON object"}
            )
            return
        call, behaviour = self._stub._admit(arrived, body)
        if call.delay and self._stub._stopping.wait(call.delay):
            self.close_connection = True
            return
        self._answer(call, behaviour)

    def _answer(self, call: Call, behaviour: Behaviour) -> None:
        call_id = call.call_id
        match call.outcome:
            case Outcome.OK:
                answer = {"success": True, "callId": call_id, "status": "dialing"}
                self._send_json(HTTPStatus.OK, answer)
            case Outcome.FAIL:
                answer = {"success": False, "callId": call_id, "error": behaviour.error}
                self._send_json(HTTPStatus.OK, answer)
            case Outcome.TIMEOUT:
                self._stub._stopping.wait(behaviour.hang_seconds)
                self.close_connection = True
            case Outcome.HTTP_429 | Outcome.HTTP_503:
                status = HTTPStatus(int(call.outcome.value.removeprefix("http_")))
                answer = {"success": False, "error": status.phrase}
                self._send_json(status, answer, {"Retry-After": "1"})
            case Outcome.HTTP_500:
                answer = {"success": False, "error": HTTPStatus.INTERNAL_SERVER_ERROR.phrase}
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, answer)
            case Outcome.GARBAGE:
                # Claims to be JSON, as a misconfigured proxy in front of the worker would.
                junk = b"<html><body>502 Bad Gateway</body></html>\x00\xff"
                self._send(HTTPStatus.OK, junk, "application/json")
            case Outcome.HUGE:
                self._stream_huge(call_id, behaviour.huge_bytes)
            case Outcome.CLOSE | Outcome.BAD_REQUEST:
                self.close_connection = True

    def _stream_huge(self, call_id: str | None, size: int) -> None:
        head = json.dumps({"success": True, "callId": call_id, "status": "dialing"})
        prefix = (head[:-1] + ', "padding": "').encode()
        suffix = b'"}'
        padding = size - len(prefix) - len(suffix)
        if padding < 0:
            # No room for valid JSON: the first `size` bytes of it.
            prefix, suffix, padding = (prefix + suffix)[:size], b"", 0
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * STREAM_CHUNK_BYTES
        try:
            self.wfile.write(prefix)
            while padding > 0:
                if self._stub._stopping.is_set():
                    self.close_connection = True
                    return
                piece = chunk[: min(padding, STREAM_CHUNK_BYTES)]
                self.wfile.write(piece)
                padding -= len(piece)
            self.wfile.write(suffix)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _control(self, raw: bytes) -> None:
        try:
            request = json.loads(raw or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the control body must be a JSON object")
            self._stub._control(request)
        except ValueError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._send_json(HTTPStatus.OK, self._stub.state_json())

    def _send_json(
        self, status: HTTPStatus, body: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self,
        status: HTTPStatus,
        payload: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class RemoteStub:
    """A worker stub in another process, driven through its control endpoints."""

    def __init__(self, url: str, *, timeout: float = REMOTE_TIMEOUT_SECONDS) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.Client(base_url=self._url, timeout=timeout)

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def control(self, request: Mapping[str, object]) -> dict[str, Any]:
        response = self._client.post("/_control", json=dict(request))
        if response.status_code == HTTPStatus.BAD_REQUEST:
            raise ValueError(response.json()["error"])
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def set_behaviour(self, phone: str | None = None, **changes: Unpack[BehaviourFields]) -> None:
        self.control({"phone": phone, "behaviour": Behaviour(**changes).to_json()})

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None:
        self.control({"cpuPercent": cpu_percent, "answerRate": answer_rate})

    def reset(self) -> None:
        self.control({"reset": True})

    def calls_since(self, at: float) -> list[Call]:
        response = self._client.get("/_calls", params={"since": repr(at)})
        response.raise_for_status()
        return [Call.from_json(item) for item in response.json()["calls"]]

    @property
    def calls(self) -> list[Call]:
        return self.calls_since(0.0)

    def health(self) -> StubHealth:
        response = self._client.get("/health")
        response.raise_for_status()
        return StubHealth.from_json(response.json())


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.worker_stub",
        description="A stand-in for the Node.js dial worker: POST /dial answers as the seed "
        "shows; the rates below make a fraction of requests misbehave.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added before each answer")
    parser.add_argument("--delay-rate", type=float, default=1.0, help="fraction delayed")
    for name in _FAULT_FIELDS.values():
        flag = "--" + name.replace("_", "") + "-rate"
        parser.add_argument(flag, dest=name, type=float, default=0.0, help="fraction (0..1)")
    parser.add_argument("--hang-seconds", type=float, default=DEFAULT_HANG_SECONDS)
    parser.add_argument("--huge-bytes", type=int, default=DEFAULT_HUGE_BYTES)
    parser.add_argument("--error", default=DEFAULT_ERROR, help="the error of a failed dial")
    parser.add_argument("--cpu-percent", type=float, default=DEFAULT_CPU_PERCENT)
    parser.add_argument("--answer-rate", type=float, default=DEFAULT_ANSWER_RATE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        behaviour = Behaviour(
            delay_ms=args.delay_ms,
            delay_rate=args.delay_rate,
            hang_seconds=args.hang_seconds,
            huge_bytes=args.huge_bytes,
            error=args.error,
            **{name: getattr(args, name) for name in _FAULT_FIELDS.values()},
        )
        stub = WorkerStub(
            args.host,
            args.port,
            behaviour,
            cpu_percent=args.cpu_percent,
            answer_rate=args.answer_rate,
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


if __name__ == "__main__":
    raise SystemExit(main())
