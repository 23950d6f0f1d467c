"""The Lambda Runtime API (version 2018-06-01) over HTTP: paths, headers and replies.

Facts it follows (AWS Lambda developer guide, "Using the Lambda runtime API for custom
runtimes"; awslambdaric's ``bootstrap.py`` and aws-lambda-cpp's ``runtime.cpp``): ``/next``
long-polls and answers 200 with the event as its body and the invocation's facts in
``Lambda-Runtime-*`` headers (the request id is required, the deadline is Unix milliseconds);
``/response``, ``/error`` and ``/init/error`` answer 202; an unknown request id gets 400 and a
response over 6 MB gets 413. The client gives a POST 100 ms, so the server answers at once.
What each request means for the execution environment is `RuntimeApi`'s business.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from loadtest.runtime.api import RuntimeApi

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


def _trace_id() -> str:
    return (
        f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};"
        f"Parent={secrets.token_hex(8)};Sampled=0"
    )


class ApiServer(ThreadingHTTPServer):
    """The Runtime API of ``api`` on 127.0.0.1 and a free port."""

    daemon_threads = True

    def __init__(self, api: RuntimeApi) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.api = api

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A runtime that is stopped drops its kept-alive connection: that is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ApiHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_GET(self) -> None:
        if self.path != NEXT_PATH:
            self._not_found()
            return
        served = self.server.api.serve_next()
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
            self._status(api.record_init_error(body, headers))
            return
        request_id, _, outcome = self.path.removeprefix(INVOCATION_PREFIX).rpartition("/")
        if not self.path.startswith(INVOCATION_PREFIX) or outcome not in {"response", "error"}:
            self._not_found()
            return
        self._status(api.record_end(request_id, outcome, body, headers))

    def _not_found(self) -> None:
        self.server.api.record_violation(f"{self.command} {self.path}: no such resource")
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
