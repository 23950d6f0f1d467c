"""A TCP proxy on loopback that breaks connections the ways a network does.

`blackhole` is the network partition a client only notices through its own timeouts: every
connection, old and new, falls silent. `silence_existing` and `reset_existing` are what an idle
pooled connection meets after a NAT gateway dropped its flow while new connections work: the
old ones go silent for good, or answer their next bytes with a TCP reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Self

from loadtest.servers import free_port

CHUNK_BYTES = 64 * 1024
STOP_TIMEOUT = 5.0
# SO_LINGER on, with a zero timeout: close() discards the socket and sends RST, not FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class _Fault(Enum):
    NONE = "none"
    SILENT = "silent"
    RESET = "reset"


@dataclass(eq=False)
class _Link:
    """One client connection and the fault it suffers; read and written on the loop only."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    fault: _Fault = _Fault.NONE


class BlackholeProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``; breaks connections on
    command (see the module's docstring).

    Runs an asyncio loop on a thread of its own, so that the code under test can block.
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port if port is not None else free_port()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[_Link] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def forwarding(self) -> bool:
        return self._forwarding.is_set()

    def start(self) -> Self:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=STOP_TIMEOUT)
        return self

    def blackhole(self) -> None:
        """Stop forwarding on every connection, and on new ones; all stay open and silent."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Forward again, after `blackhole` (connections silenced one by one stay silent)."""
        self._forwarding.set()

    def silence_existing(self) -> int:
        """Drop every byte, both ways and for ever, on the connections open now, and close
        none of them; later connections are forwarded. Returns how many were silenced."""
        return self._break_existing(_Fault.SILENT)

    def reset_existing(self) -> int:
        """Make each connection open now answer the client's next bytes with a TCP reset (and
        close its upstream side); later connections are forwarded. Returns how many."""
        return self._break_existing(_Fault.RESET)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=STOP_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _break_existing(self, fault: _Fault) -> int:
        async def mark() -> int:
            # On the loop, so no connection is accepted half-way through.
            for link in self._links:
                link.fault = fault
            return len(self._links)

        return asyncio.run_coroutine_threadsafe(mark(), self._loop).result(timeout=STOP_TIMEOUT)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(writer)
        self._links.add(link)
        try:
            up_reader, link.upstream = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            await asyncio.gather(
                self._pump(reader, link.upstream, link, from_client=True),
                self._pump(up_reader, writer, link, from_client=False),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._links.discard(link)
            for stream in (writer, link.upstream):
                if stream is not None:
                    stream.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
        *,
        from_client: bool,
    ) -> None:
        while data := await source.read(CHUNK_BYTES):
            if link.fault is _Fault.RESET and from_client:
                self._reset(link)
                return
            if link.fault is _Fault.NONE and self._forwarding.is_set():
                sink.write(data)
                await sink.drain()
        # One side closed: close the other, as a plain TCP path would.
        with contextlib.suppress(OSError):
            sink.close()

    @staticmethod
    def _reset(link: _Link) -> None:
        client = link.client.get_extra_info("socket")
        if client is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        # abort(), not close(): nothing is flushed, and the socket closes with its linger.
        link.client.transport.abort()
        if link.upstream is not None:
            link.upstream.close()


@contextlib.contextmanager
def blackhole_proxy(upstream_port: int) -> Iterator[BlackholeProxy]:
    with BlackholeProxy(upstream_port) as proxy:
        yield proxy
