"""The stub's HTTP face: `POST /dial` answered as the `Behaviour` plans it, and the control
endpoints (``POST /_control``, ``GET``/``DELETE /_calls``, ``GET /health``, ``GET /_health``)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from .behaviour import Behaviour, Outcome
from .records import Call

if TYPE_CHECKING:
    from .server import WorkerStub

MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024
# The default backlog of 5 drops SYNs when hundreds of dials arrive at once, and a dropped SYN
# costs the client a one-second retransmit: a latency spike the real worker would not show.
LISTEN_BACKLOG: Final = 1024
STREAM_CHUNK_BYTES: Final = 64 * 1024
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], stub: WorkerStub) -> None:
        self.stub = stub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request is the client's business (a dial cut at its
        deadline, a container killed): one traceback each on stderr would drown the rest."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: StubServer
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
        call, behaviour = self._stub._admit(arrived, body, self.headers.get(IDEMPOTENCY_HEADER))
        if call.delay and self._stub._stopping.wait(call.delay):
            self.close_connection = True
            return
        self._answer(call, behaviour)

    def _answer(self, call: Call, behaviour: Behaviour) -> None:
        call_id = call.call_id
        if call.repeat:
            # As the worker answers a key it has placed: success, and no second call.
            self._send_json(
                HTTPStatus.OK, {"success": True, "callId": call_id, "status": "duplicate"}
            )
            return
        match call.outcome:
            case Outcome.OK:
                answer = {"success": True, "callId": call_id, "status": "dialing"}
                self._send_json(HTTPStatus.OK, answer)
                refusals = self._stub.refusals
                if call.refused:
                    # The carrier's SIP 503: the call ends at once, and the limiter is told.
                    if refusals is not None:
                        refusals.refused()
                    return
                ends = self._stub.call_ends
                if ends is not None and call.body is not None:
                    ends.answered(call.body)
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
