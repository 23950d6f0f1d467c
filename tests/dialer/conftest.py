"""Fixtures of the dialer's tests: a worker stub over real HTTP, dialers built against it on an
in-process Redis of the test's own, and the JSON lines they print."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from dialer_lambda import Dialer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import Lines, MakeDialer, RecordingWorker


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
def make_dialer(stub: WorkerStub, memory_url: str) -> Iterator[MakeDialer]:
    """``make_dialer(MAX_CPS="5", ...)``: a dialer on the test's Redis against the stub."""
    factory = MakeDialer(stub.url, memory_url)
    yield factory
    factory.close()


@pytest.fixture
def dialer(make_dialer: MakeDialer) -> Dialer:
    """A dialer with the default settings against the stub."""
    return make_dialer()


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Lines:
    return Lines(capsys)


@pytest.fixture
def recording_worker() -> Iterator[RecordingWorker]:
    server = RecordingWorker()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()
