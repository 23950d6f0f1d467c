"""One dial's timeout is one deadline over connect, headers and body: a worker that answers its
headers late and then trickles its body cannot hold a dial past it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dialer_lambda import DialStatus
from dialer_lambda._worker import TIMEOUT_ERROR, WorkerClient

TIMEOUT = 1.0
HEADERS_AFTER = 0.9
TRICKLE_EVERY = 0.3
BOUND = TIMEOUT + 0.15
"""The timeout, and what a busy machine adds to waking the dial's thread."""


@pytest.fixture
def trickling_worker() -> Iterator[str]:
    """Answers each POST's headers after `HEADERS_AFTER`, then one byte of body every
    `TRICKLE_EVERY` for much longer than any timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            if stop.wait(HEADERS_AFTER):
                return
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
            )
            for _ in range(20):
                if stop.wait(TRICKLE_EVERY):
                    return
                try:
                    connection.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()
    thread.join()


def test_a_worker_that_trickles_its_body_does_not_hold_a_dial_past_its_timeout(
    trickling_worker: str,
) -> None:
    client = WorkerClient(trickling_worker, TIMEOUT, max_connections=1)
    started = time.monotonic()

    outcome = client.dial({"callId": "c"}, {})
    elapsed = time.monotonic() - started
    client.close()

    assert (outcome.status, outcome.error) == (DialStatus.FAILED, TIMEOUT_ERROR)
    assert elapsed <= BOUND, f"the dial took {elapsed:.2f} s against a timeout of {TIMEOUT} s"
