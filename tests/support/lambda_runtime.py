"""The Lambda Runtime API (version 2018-06-01) on loopback, and the real runtime client on it.

`RuntimeApi` plays the part of Lambda for one execution environment: a test queues events
(each with the function's timeout, from which the deadline is set when the runtime takes the
event, as Lambda does), and reads back how each invocation ended, through ``/response`` or
``/error``, and any ``/init/error``. `RuntimeProcess` runs ``python -m awslambdaric HANDLER``,
which is what the Lambda Python base image's ``/lambda-entrypoint.sh`` runs, against it.

Facts the emulator follows (AWS Lambda developer guide, "Using the Lambda runtime API for custom
runtimes"; awslambdaric's ``bootstrap.py`` and aws-lambda-cpp's ``runtime.cpp``): ``/next``
long-polls and answers 200 with the event as its body and the invocation's facts in
``Lambda-Runtime-*`` headers (the request id is required, the deadline is Unix milliseconds);
``/response``, ``/error`` and ``/init/error`` answer 202; an unknown request id gets 400 and a
response over 6 MB gets 413. The client gives a POST 100 ms, so the emulator answers at once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Final, Self, TypeVar

from loadtest.servers import stop_process
from loadtest.tasks import seed_task

API_VERSION: Final = "2018-06-01"
NEXT_PATH: Final = f"/{API_VERSION}/runtime/invocation/next"
INVOCATION_PREFIX: Final = f"/{API_VERSION}/runtime/invocation/"
INIT_ERROR_PATH: Final = f"/{API_VERSION}/runtime/init/error"
REQUEST_ID_HEADER: Final = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_HEADER: Final = "Lambda-Runtime-Deadline-Ms"
FUNCTION_ARN_HEADER: Final = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID_HEADER: Final = "Lambda-Runtime-Trace-Id"
CLIENT_CONTEXT_HEADER: Final = "Lambda-Runtime-Client-Context"
COGNITO_IDENTITY_HEADER: Final = "Lambda-Runtime-Cognito-Identity"
ERROR_TYPE_HEADER: Final = "Lambda-Runtime-Function-Error-Type"
# A synchronous invocation's response is capped at 6 MB.
MAX_RESPONSE_BYTES: Final = 6 * 1024 * 1024

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DIALER_HANDLER: Final = "dialer_lambda.handler.handler"
FUNCTION_NAME: Final = "dialer-worker"
FUNCTION_ARN: Final = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
DEFAULT_FUNCTION_TIMEOUT_SECONDS: Final = 15.0
DEFAULT_WAIT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 5.0
# What the child keeps of this process's environment; Lambda starts the runtime with a clean
# one, so a variable exported in a developer's shell (MAX_CPS, REDIS_URL...) must not leak in.
INHERITED_VARIABLES: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


_T = TypeVar("_T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _trace_id() -> str:
    return (
        f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};"
        f"Parent={secrets.token_hex(8)};Sampled=0"
    )


@dataclass(frozen=True)
class Invocation:
    """An event queued for the runtime, and what ``/next`` will say about it."""

    request_id: str
    body: bytes
    timeout: float
    """The function's timeout in seconds: the deadline is this long after ``/next`` serves it."""
    function_arn: str = FUNCTION_ARN
    client_context: str | None = None
    cognito_identity: str | None = None


@dataclass(frozen=True)
class InvocationEnd:
    """How an invocation ended: a ``/response`` or an ``/error`` from the runtime."""

    request_id: str
    outcome: str
    """``"response"`` or ``"error"``."""
    body: bytes
    headers: Mapping[str, str]
    """Request headers, names in lower case."""
    started_ms: int
    """Unix milliseconds when ``/next`` handed the event out."""
    deadline_ms: int
    ended_ms: int
    """Unix milliseconds when the emulator received the end."""

    @property
    def in_time(self) -> bool:
        """Whether it ended by the deadline (past it, Lambda would have stopped the runtime)."""
        return self.ended_ms <= self.deadline_ms

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class InitError:
    """A failed init phase, as the runtime reported it to ``/init/error``."""

    body: bytes
    headers: Mapping[str, str]

    @property
    def error_type(self) -> str | None:
        return self.headers.get(ERROR_TYPE_HEADER.lower())

    def json(self) -> Any:
        return json.loads(self.body)


class _Started:
    """``with`` starts and stops."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class _State:
    pending: list[Invocation] = field(default_factory=list)
    in_flight: dict[str, tuple[Invocation, int, int]] = field(default_factory=dict)
    ends: list[InvocationEnd] = field(default_factory=list)
    init_errors: list[InitError] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    polls: int = 0
    stopping: bool = False


class RuntimeApi(_Started):
    """The Runtime API of one execution environment, on 127.0.0.1 and a free port.

    One invocation runs at a time, as in a Lambda (default) execution environment: a ``/next``
    while one is in flight is recorded in `violations`. Waits take a timeout and raise
    `TimeoutError` naming what was seen, so a runtime that died shows up as a clear failure.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._state = _State()
        self._server = _ApiServer(self)
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"runtime-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a ``/next`` still waiting is answered with a closed connection."""
        with self._changed:
            self._state.stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """What ``AWS_LAMBDA_RUNTIME_API`` holds: host and port, no scheme."""
        return f"127.0.0.1:{self.port}"

    # invoking

    def invoke(
        self,
        event: Any,
        *,
        timeout: float = DEFAULT_FUNCTION_TIMEOUT_SECONDS,
        request_id: str | None = None,
        client_context: Mapping[str, Any] | None = None,
        cognito_identity: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue ``event`` (JSON-encoded unless it is bytes); return its request id."""
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        invocation = Invocation(
            request_id=request_id or str(uuid.uuid4()),
            body=body,
            timeout=timeout,
            client_context=None if client_context is None else json.dumps(client_context),
            cognito_identity=None if cognito_identity is None else json.dumps(cognito_identity),
        )
        with self._changed:
            self._state.pending.append(invocation)
            self._changed.notify_all()
        return invocation.request_id

    def wait_end(self, request_id: str, timeout: float = DEFAULT_WAIT_SECONDS) -> InvocationEnd:
        """How invocation ``request_id`` ended, once it has (`RuntimeError` if init failed)."""

        def ended(state: _State) -> InvocationEnd | InitError | None:
            end = next((e for e in state.ends if e.request_id == request_id), None)
            return end or (state.init_errors[0] if state.init_errors else None)

        found = self._wait(ended, timeout, f"no /response or /error for {request_id}")
        if isinstance(found, InitError):
            raise RuntimeError(f"init failed: {found.body.decode(errors='replace')}")
        assert isinstance(found, InvocationEnd)
        return found

    def run(
        self, event: Any, *, wait: float = DEFAULT_WAIT_SECONDS, **options: Any
    ) -> InvocationEnd:
        """Invoke and wait for the end: `invoke` then `wait_end`."""
        return self.wait_end(self.invoke(event, **options), wait)

    def wait_init_error(self, timeout: float = DEFAULT_WAIT_SECONDS) -> InitError:
        return self._wait(
            lambda state: state.init_errors[0] if state.init_errors else None,
            timeout,
            "no /init/error",
        )

    @property
    def violations(self) -> list[str]:
        """Requests that broke the protocol (unknown paths or ids, a /next out of turn...)."""
        with self._changed:
            return list(self._state.violations)

    @property
    def polls(self) -> int:
        """How many ``/next`` requests arrived: the first one means init is over."""
        with self._changed:
            return self._state.polls

    def _wait(self, found: Callable[[_State], _T | None], timeout: float, missing: str) -> _T:
        with self._changed:
            result: _T | None = None

            def ready() -> bool:
                nonlocal result
                result = found(self._state)
                return result is not None

            if not self._changed.wait_for(ready, timeout):
                state = self._state
                raise TimeoutError(
                    f"{missing} within {timeout:g}s (polls: {state.polls}, ends: "
                    f"{[e.request_id for e in state.ends]}, init errors: "
                    f"{len(state.init_errors)}, violations: {state.violations})"
                )
            assert result is not None
            return result

    # called by the request handler

    def _next(self) -> tuple[Invocation, int, int] | None:
        with self._changed:
            self._state.polls += 1
            if self._state.in_flight:
                self._state.violations.append(
                    f"/next while {sorted(self._state.in_flight)} had not ended"
                )
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._state.pending or self._state.stopping)
            if self._state.stopping:
                return None
            invocation = self._state.pending.pop(0)
            started = _now_ms()
            served = (invocation, started, started + round(invocation.timeout * 1000))
            self._state.in_flight[invocation.request_id] = served
            return served

    def _end(
        self, request_id: str, outcome: str, body: bytes, headers: Mapping[str, str]
    ) -> HTTPStatus:
        with self._changed:
            served = self._state.in_flight.pop(request_id, None)
            if served is None:
                self._state.violations.append(f"/{outcome} for unknown request id {request_id!r}")
                return HTTPStatus.BAD_REQUEST
            if len(body) > MAX_RESPONSE_BYTES:
                self._state.violations.append(f"/{outcome} of {len(body)} bytes for {request_id}")
                return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            _, started, deadline = served
            self._state.ends.append(
                InvocationEnd(request_id, outcome, body, headers, started, deadline, _now_ms())
            )
            self._changed.notify_all()
            return HTTPStatus.ACCEPTED

    def _init_error(self, body: bytes, headers: Mapping[str, str]) -> HTTPStatus:
        with self._changed:
            if self._state.polls:
                self._state.violations.append("/init/error after init ended")
                return HTTPStatus.FORBIDDEN
            self._state.init_errors.append(InitError(body, headers))
            self._changed.notify_all()
            return HTTPStatus.ACCEPTED

    def _violation(self, text: str) -> None:
        with self._changed:
            self._state.violations.append(text)
            self._changed.notify_all()


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: RuntimeApi) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.api = api

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A runtime that is stopped drops its kept-alive connection: that is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ApiHandler(BaseHTTPRequestHandler):
    server: _ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_GET(self) -> None:
        if self.path != NEXT_PATH:
            self._not_found()
            return
        served = self.server.api._next()
        if served is None:
            self.close_connection = True
            return
        invocation, _, deadline = served
        headers = {
            REQUEST_ID_HEADER: invocation.request_id,
            DEADLINE_HEADER: str(deadline),
            FUNCTION_ARN_HEADER: invocation.function_arn,
            TRACE_ID_HEADER: _trace_id(),
            "Content-Type": "application/json",
        }
        if invocation.client_context is not None:
            headers[CLIENT_CONTEXT_HEADER] = invocation.client_context
        if invocation.cognito_identity is not None:
            headers[COGNITO_IDENTITY_HEADER] = invocation.cognito_identity
        self._reply(HTTPStatus.OK, invocation.body, headers)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        api = self.server.api
        if self.path == INIT_ERROR_PATH:
            self._status(api._init_error(body, headers))
            return
        request_id, _, outcome = self.path.removeprefix(INVOCATION_PREFIX).rpartition("/")
        if not self.path.startswith(INVOCATION_PREFIX) or outcome not in {"response", "error"}:
            self._not_found()
            return
        self._status(api._end(request_id, outcome, body, headers))

    def _not_found(self) -> None:
        self.server.api._violation(f"{self.command} {self.path}: no such resource")
        self._reply(HTTPStatus.NOT_FOUND, b'{"errorType":"NotFound"}')

    def _status(self, status: HTTPStatus) -> None:
        body: dict[str, str] = (
            {"status": "OK"}
            if status is HTTPStatus.ACCEPTED
            else {"errorType": status.phrase, "errorMessage": f"rejected: {status.phrase}"}
        )
        self._reply(status, json.dumps(body).encode())

    def _reply(
        self, status: HTTPStatus, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def lambda_environment(api: RuntimeApi, handler: str = DIALER_HANDLER) -> dict[str, str]:
    """The variables Lambda defines for a function's runtime, pointed at ``api``."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]0",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(REPO_ROOT),
        "TZ": ":UTC",
    }


class RuntimeProcess(_Started):
    """``python -m awslambdaric HANDLER`` against ``api``, with ``env`` (the function's
    configuration) on top of Lambda's own variables; cwd and PYTHONPATH are the repository.

    Its stdout and stderr are collected line by line; `stop` ends it and returns once both are
    read to the end, so `stdout` is then complete.
    """

    def __init__(
        self, api: RuntimeApi, env: Mapping[str, str], handler: str = DIALER_HANDLER
    ) -> None:
        self.api = api
        inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        pythonpath = os.pathsep.join(
            part for part in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if part
        )
        self.env = {
            **inherited,
            **lambda_environment(api, handler),
            "PYTHONPATH": pythonpath,
            **env,
        }
        self.handler = handler
        self.started_ms: int | None = None
        """Unix milliseconds just before the process was started."""
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("a RuntimeProcess starts once")
        self.started_ms = _now_ms()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", self.handler],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        for stream, sink in ((self._process.stdout, self._out), (self._process.stderr, self._err)):
            reader = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream: IO[bytes], sink: list[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line.decode("utf-8", "replace"))

    def wait(self, timeout: float = DEFAULT_WAIT_SECONDS) -> int:
        """Wait for the process to exit by itself (after a failed init) and return its code."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._join_readers()
        return code

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            stop_process(self._process, timeout=STOP_TIMEOUT_SECONDS)
        self._join_readers()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(STOP_TIMEOUT_SECONDS)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)


def cold_start_seconds(env: Mapping[str, str], timeout: float = DEFAULT_WAIT_SECONDS) -> float:
    """Seconds from starting ``python -m awslambdaric`` for the dialer to the first response, a
    one-task batch queued beforehand: the import, the clients, one claim, permit and dial.

    ``env`` is the function's configuration (``REDIS_URL``, ``NODE_WORKER_URL``...). The task
    has a contact id of its own, so that it is dialed rather than skipped as a duplicate.
    """
    task = seed_task()
    task["contactId"] = f"cold-start-{uuid.uuid4().hex[:12]}"
    task["messageId"] = task["contactId"]
    with RuntimeApi() as api:
        request_id = api.invoke([task])
        with RuntimeProcess(api, env) as process:
            end = api.wait_end(request_id, timeout)
        assert process.started_ms is not None
        if end.outcome != "response":
            raise RuntimeError(f"the cold-start invocation failed: {end.body!r}")
        if end.json()["successful"] != 1:
            raise RuntimeError(f"the cold-start task was not dialed: {end.json()}")
    return (end.ended_ms - process.started_ms) / 1000.0
