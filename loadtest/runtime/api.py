"""Lambda's side of one execution environment, for the real runtime client to run against.

`RuntimeApi` plays the part of Lambda: a test queues events (each with the function's timeout,
from which the deadline is set when the runtime takes the event, as Lambda does), and reads back
how each invocation ended, through ``/response`` or ``/error``, and any ``/init/error``. The
HTTP face is `loadtest.runtime.http`; the runtime client's process is
`loadtest.runtime.process`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Self, TypeVar

from loadtest.runtime.http import ERROR_TYPE_HEADER, MAX_RESPONSE_BYTES, ApiServer

FUNCTION_NAME: Final = "dialer-worker"
FUNCTION_ARN: Final = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
DEFAULT_FUNCTION_TIMEOUT_SECONDS: Final = 15.0
DEFAULT_WAIT_SECONDS: Final = 30.0


_T = TypeVar("_T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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


@dataclass
class _State:
    pending: list[Invocation] = field(default_factory=list)
    in_flight: dict[str, tuple[Invocation, int, int]] = field(default_factory=dict)
    ends: list[InvocationEnd] = field(default_factory=list)
    init_errors: list[InitError] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    polls: int = 0
    first_poll_ms: int | None = None
    stopping: bool = False


class RuntimeApi:
    """The Runtime API of one execution environment, on 127.0.0.1 and a free port.

    One invocation runs at a time, as in a Lambda (default) execution environment: a ``/next``
    while one is in flight is recorded in `violations`. Waits take a timeout and raise
    `TimeoutError` naming what was seen, so a runtime that died shows up as a clear failure.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._state = _State()
        self._server = ApiServer(self)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

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

    def wait_init_done(self, timeout: float = DEFAULT_WAIT_SECONDS) -> None:
        """Return once the runtime asked for its first event: its init phase is over
        (`RuntimeError` at once if it failed instead)."""

        def ended(state: _State) -> int | InitError | None:
            return state.polls or (state.init_errors[0] if state.init_errors else None)

        found = self._wait(ended, timeout, "no /next")
        if isinstance(found, InitError):
            raise RuntimeError(f"init failed: {found.body.decode(errors='replace')}")

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

    @property
    def init_done_ms(self) -> int | None:
        """Unix milliseconds of the first ``/next``: when the runtime's init phase ended."""
        with self._changed:
            return self._state.first_poll_ms

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

    # called by the HTTP server, one thread per request

    def serve_next(self) -> tuple[Invocation, int, int] | None:
        with self._changed:
            self._state.polls += 1
            if self._state.first_poll_ms is None:
                self._state.first_poll_ms = now_ms()
            if self._state.in_flight:
                self._state.violations.append(
                    f"/next while {sorted(self._state.in_flight)} had not ended"
                )
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._state.pending or self._state.stopping)
            if self._state.stopping:
                return None
            invocation = self._state.pending.pop(0)
            started = now_ms()
            served = (invocation, started, started + round(invocation.timeout * 1000))
            self._state.in_flight[invocation.request_id] = served
            return served

    def record_end(
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
                InvocationEnd(request_id, outcome, body, headers, started, deadline, now_ms())
            )
            self._changed.notify_all()
            return HTTPStatus.ACCEPTED

    def record_init_error(self, body: bytes, headers: Mapping[str, str]) -> HTTPStatus:
        with self._changed:
            if self._state.polls:
                self._state.violations.append("/init/error after init ended")
                return HTTPStatus.FORBIDDEN
            self._state.init_errors.append(InitError(body, headers))
            self._changed.notify_all()
            return HTTPStatus.ACCEPTED

    def record_violation(self, text: str) -> None:
        with self._changed:
            self._state.violations.append(text)
            self._changed.notify_all()
