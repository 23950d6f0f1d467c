"""Fixtures for the dialer's tests: a real worker stub over HTTP, the handler configured for it,
tasks as the pipe delivers them, and the JSON lines the handler prints."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dialer_lambda import Dialer, handler
from loadtest.tasks import seed_task
from loadtest.worker_stub import WorkerStub

SEED_TASK: dict[str, Any] = seed_task()
DIAL_KEYS = {
    "callId",
    "phoneNumber",
    "campaignId",
    "contactId",
    "audioFileUrl",
    "ivrFlow",
    "metadata",
}
LAMBDA_MILLIS = 15_000


def phone_of(index: int) -> str:
    return f"+9725012{index:05d}"


def make_task(index: int = 0, **changes: Any) -> dict[str, Any]:
    """The seed's task for contact ``contact-{index}``, with its own phone and messageId."""
    task = copy.deepcopy(SEED_TASK)
    task.update(
        {"contactId": f"contact-{index}", "phoneNumber": phone_of(index), "messageId": f"m-{index}"}
    )
    task.update(changes)
    return task


def make_batch(size: int = 10, **changes: Any) -> list[dict[str, Any]]:
    return [make_task(index, **changes) for index in range(size)]


@dataclass
class FakeContext:
    """The two things the handler reads from a Lambda context."""

    remaining_ms: int = LAMBDA_MILLIS
    aws_request_id: str = "req-test"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Configure:
    """Rebuilds the handler's module state for a test, against the test's stub."""

    stub: WorkerStub
    redis_url: str
    defaults: dict[str, str] = field(default_factory=dict)

    def __call__(self, **env: str) -> Dialer:
        values = {
            "REDIS_URL": self.redis_url,
            "NODE_WORKER_URL": self.stub.url,
            "DIAL_TIMEOUT_SECONDS": "1",
            **self.defaults,
            **env,
        }
        return handler.configure(values)


@pytest.fixture
def stub() -> Iterator[WorkerStub]:
    """A worker stub on a free port, answering at once unless told otherwise."""
    with WorkerStub() as server:
        yield server


@pytest.fixture
def memory_url() -> str:
    """An in-process Redis of this test's own."""
    return f"memory://{uuid.uuid4().hex}"


@pytest.fixture
def configure(stub: WorkerStub, memory_url: str) -> Iterator[Configure]:
    """Configure the handler (on memory://) with ``configure(MAX_CPS="5", ...)``."""
    yield Configure(stub, memory_url)
    handler.configure({"REDIS_URL": f"memory://{uuid.uuid4().hex}"})


@pytest.fixture
def dialer(configure: Configure) -> Dialer:
    """The handler configured with defaults against the stub."""
    return configure()


class Lines:
    """The JSON lines printed to stdout, parsed."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.text = ""

    def read(self) -> list[dict[str, Any]]:
        self.text += self._capsys.readouterr().out
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.read() if line.get("event") == name]

    def emf(self) -> list[dict[str, Any]]:
        return [line for line in self.read() if "_aws" in line]


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Lines:
    return Lines(capsys)


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingWorker
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.requests.append((dict(self.headers.items()), json.loads(body)))
        reply = json.dumps({"success": True, "status": "dialing"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class RecordingWorker(ThreadingHTTPServer):
    """A worker that answers success and keeps each request's headers (the stub keeps bodies
    only), for the traceparent checks."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.lock = threading.Lock()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def headers(self, name: str) -> list[str]:
        with self.lock:
            return [
                value
                for headers, _ in self.requests
                for key, value in headers.items()
                if key.lower() == name
            ]


@pytest.fixture
def recording_worker() -> Iterator[RecordingWorker]:
    server = RecordingWorker()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()
