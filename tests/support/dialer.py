"""Helpers for the dialer's tests: dialers built for a test, tasks as the pipe delivers them,
the JSON lines a dialer prints, and a worker that keeps each request's headers."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dialer_lambda import Dialer, Settings
from loadtest.tasks import seed_task

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


def seed_result(size: int, **changes: Any) -> dict[str, Any]:
    """The seed's result for a batch of ``size`` tasks all dialed, with ``changes``."""
    return {
        "totalProcessed": size,
        "successful": size,
        "failed": 0,
        "rateLimited": 0,
        "duplicates": 0,
        "errors": [],
        "batchItemFailures": [],
        **changes,
    }


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


def dialer_for(env: Mapping[str, str]) -> Dialer:
    """A dialer of the test's own for ``env``, as the Lambda builds one from its environment;
    close it (``contextlib.closing``) when done."""
    return Dialer.from_settings(Settings.from_env(env))


@dataclass
class MakeDialer:
    """Builds dialers for one test against its worker and Redis, and closes them all at its end:
    ``make_dialer(MAX_CPS="5", ...)`` on top of ``defaults``."""

    worker_url: str
    redis_url: str
    defaults: dict[str, str] = field(default_factory=dict)
    built: list[Dialer] = field(default_factory=list)

    def __call__(self, **env: str) -> Dialer:
        values = {
            "REDIS_URL": self.redis_url,
            "NODE_WORKER_URL": self.worker_url,
            "DIAL_TIMEOUT_SECONDS": "1",
            **self.defaults,
            **env,
        }
        dialer = dialer_for(values)
        self.built.append(dialer)
        return dialer

    def close(self) -> None:
        for dialer in self.built:
            dialer.close()


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


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingWorker
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.requests.append((dict(self.headers.items()), json.loads(body)))
            self.server.ports.append(self.client_address[1])
        reply = json.dumps({"success": True, "status": "dialing"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class RecordingWorker(ThreadingHTTPServer):
    """A worker that answers success and keeps each request's headers (the stub keeps bodies
    only) and the client's port it came from, for the traceparent and connection checks."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.lock = threading.Lock()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.ports: list[int] = []

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
