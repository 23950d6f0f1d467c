"""A TCP proxy on loopback that can stop forwarding without closing anything: the network
partition that a client only notices through its own timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from loadtest.servers import free_port

CHUNK_BYTES = 64 * 1024
STOP_TIMEOUT = 5.0


class BlackholeProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port`` until `blackhole()`; then it
    keeps every connection open, accepts new ones, and drops every byte in both directions
    until `heal()`.

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
        """Stop forwarding; connections stay open and silent."""
        self._forwarding.clear()

    def heal(self) -> None:
        self._forwarding.set()

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
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(CHUNK_BYTES):
            if self._forwarding.is_set():
                sink.write(data)
                await sink.drain()
        # One side closed: close the other, as a plain TCP path would.
        with contextlib.suppress(OSError):
            sink.close()


@contextlib.contextmanager
def blackhole_proxy(upstream_port: int) -> Iterator[BlackholeProxy]:
    with BlackholeProxy(upstream_port) as proxy:
        yield proxy
