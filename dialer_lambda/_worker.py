"""The Node.js worker's HTTP API: send one dial command and say what became of it.

The classification follows one question: could the call have been placed? If it surely was
not (the connection was never made, or the worker refused with 429/503), the task may be
retried and its idempotency claim released. If it may have been (a timeout after the request
went out, a 5xx, a reply that makes no sense), it is never retried: a person called twice is
worse than a call missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import httpx

from ._logging import LOGGER_NAME

DIAL_PATH: Final = "/dial"
TIMEOUT_ERROR: Final = "Node.js Worker timeout"
MAX_REPLY_BYTES: Final = 64 * 1024
MAX_REASON_LENGTH: Final = 200
BUSY_STATUSES: Final = frozenset({429, 503})
# Node's http server closes idle keep-alive sockets after 5 s; letting ours go at 4 s avoids
# sending a dial down a socket the worker is closing (a failure that would look like a maybe).
KEEPALIVE_EXPIRY_SECONDS: Final = 4.0


class DialStatus(StrEnum):
    """The three outcomes a dial can count as in the batch result."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    RATE_LIMITED = "rateLimited"


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """What one POST to the worker came to.

    ``reached_worker`` is False only when the call surely was not placed: then the task is
    retried and its claim released. ``worker_error`` counts the reply as an HTTP-level failure
    of the worker (the WorkerHttpErrors metric).
    """

    status: DialStatus
    error: str | None = None
    retry: bool = False
    reached_worker: bool = True
    worker_error: bool = False
    http_status: int | None = None

    def __post_init__(self) -> None:
        if (self.status is DialStatus.SUCCESSFUL) != (self.error is None):
            raise ValueError("a successful dial has no error, and every other outcome has one")
        if self.retry and self.status is DialStatus.SUCCESSFUL:
            raise ValueError("a successful dial is never retried")


_LOGGER: Final = logging.getLogger(LOGGER_NAME)


class _Sent:
    """Whether any byte of the request may have left, from httpcore's trace of the exchange."""

    __slots__ = ("may_have_left",)

    def __init__(self) -> None:
        self.may_have_left = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            self.may_have_left = True


@contextlib.contextmanager
def _cut_at(response: httpx.Response, deadline: float) -> Iterator[None]:
    """Shut the response's socket at ``deadline``: httpx's timeout bounds each read, so a
    worker that trickles its body would otherwise hold the dial past it."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        yield
        return

    def cut() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(deadline - time.monotonic(), 0.0), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _failed(error: str, **fields: Any) -> DialOutcome:
    return DialOutcome(DialStatus.FAILED, error, **fields)


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text[:MAX_REASON_LENGTH]


def _verify(url: str) -> ssl.SSLContext | bool:
    """TLS verification for a worker at ``url``. Over https, httpx's default: the CA bundle,
    whose loading is most of what building the client costs at a container's start. Over plain
    http no TLS is ever used, so the bundle is not loaded: the context given trusts no
    certificate, and a TLS connection the client somehow made would fail, not go unverified."""
    if httpx.URL(url).scheme == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class WorkerClient:
    """One pooled HTTP client for the container's life; thread-safe (httpx.Client is)."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        *,
        max_connections: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``: httpx's own by default; tests pass one that injects faults."""
        self._url = base_url.rstrip("/") + DIAL_PATH
        self._timeout = timeout
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            ),
            # A redirect would resend the dial elsewhere: never follow one.
            follow_redirects=False,
            verify=_verify(self._url),
        )

    def dial(
        self, command: Mapping[str, Any], headers: Mapping[str, str], timeout: float | None = None
    ) -> DialOutcome:
        """POST the command, within ``timeout`` seconds when that is shorter than the client's
        own (the invocation's time left); never raises for anything the network or the worker
        does."""
        seconds = self._timeout if timeout is None else min(timeout, self._timeout)
        # httpx's timeout applies to each phase (connect, each read); the deadline caps the
        # whole exchange, so a worker that trickles its reply cannot hold the dial past it.
        deadline = time.monotonic() + seconds
        body = json.dumps(command, separators=(",", ":")).encode()
        sent = _Sent()
        try:
            with (
                self._client.stream(
                    "POST",
                    self._url,
                    content=body,
                    headers={**headers, "content-type": "application/json"},
                    timeout=httpx.Timeout(seconds),
                    extensions={"trace": sent.trace},
                ) as response,
                _cut_at(response, deadline),
            ):
                return self._classify(response, deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # No connection was ever made (refused, no route, DNS, TLS handshake, or no free
            # connection in our pool): nothing reached the worker.
            return _failed(
                f"Node.js Worker unreachable: {_reason(error)}",
                retry=True,
                reached_worker=False,
                worker_error=True,
            )
        except httpx.TimeoutException:
            return _failed(TIMEOUT_ERROR, worker_error=True)
        except httpx.HTTPError as error:
            if time.monotonic() >= deadline:
                return _failed(TIMEOUT_ERROR, worker_error=True)
            return _failed(f"Node.js Worker connection error: {_reason(error)}", worker_error=True)
        except Exception as error:
            # A bug, here or in a library: logged with its stack by the caller's logger. Whether
            # the call may have been placed is what the request's own progress says.
            _LOGGER.exception("dial raised")
            reason = f"internal error: {type(error).__name__}"
            if sent.may_have_left:
                return _failed(reason)
            return _failed(reason, retry=True, reached_worker=False)

    def _classify(self, response: httpx.Response, deadline: float) -> DialOutcome:
        status = response.status_code
        if status in BUSY_STATUSES:
            # The worker refused the call before placing it: pacing, not failure.
            return DialOutcome(
                DialStatus.RATE_LIMITED,
                f"Node.js Worker busy (HTTP {status})",
                retry=True,
                reached_worker=False,
                worker_error=True,
                http_status=status,
            )

        def broken(error: str) -> DialOutcome:
            return _failed(error, worker_error=True, http_status=status)

        if not 200 <= status < 300:
            return broken(f"Node.js Worker HTTP {status}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_REPLY_BYTES:
                return broken(f"Node.js Worker reply larger than {MAX_REPLY_BYTES} bytes")
            if time.monotonic() > deadline:
                return broken(TIMEOUT_ERROR)
        try:
            reply = json.loads(body)
        except (ValueError, RecursionError):
            return broken("Node.js Worker reply is not JSON")
        if not isinstance(reply, dict) or reply.get("success") is not True:
            return _failed(
                f"Node.js Worker reported failure: {_worker_reason(reply)}", http_status=status
            )
        return DialOutcome(DialStatus.SUCCESSFUL, http_status=status)

    def close(self) -> None:
        self._client.close()


def _worker_reason(reply: Any) -> str:
    if isinstance(reply, dict):
        for key in ("error", "message", "status"):
            value = reply.get(key)
            if isinstance(value, str) and value:
                return value[:MAX_REASON_LENGTH]
        return "success is not true"
    return "reply is not a JSON object"
