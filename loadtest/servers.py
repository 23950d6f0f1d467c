"""Real processes for tests, the benchmark and the load test: a redis-server of our own on a free
port and the worker stub, started and stopped here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.tls import TlsFiles

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[1]
"""The checkout: children run from here and import its packages."""


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a Python child of the checkout, plus ``extra``."""
    env = dict(os.environ)
    # Children write and then use bytecode caches, as an installed package (and the Lambda
    # image, where pip compiled them) would: a cold start is not a compile.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = START_TIMEOUT, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.01)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def worker_stub_process(
    delay_ms: float = 0.0, log: Path | None = None, extra: Sequence[str] = ()
) -> Iterator[str]:
    """``python -m loadtest.worker_stub`` in a process of its own, with ``extra`` arguments,
    its output going to ``log`` (or nowhere); yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "loadtest.worker_stub", "--port", str(port)]
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log.open("w")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(
            [*command, "--delay-ms", str(delay_ms), *extra],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=child_env(),
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(process)


@dataclass
class RedisServer:
    """One redis-server process on loopback that keeps nothing on disk."""

    port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-test-")))
    process: subprocess.Popen[bytes] | None = None
    tls: TlsFiles | None = None
    """With TLS files, the port speaks TLS only (``rediss://``) and plain TCP is off."""

    @property
    def url(self) -> str:
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]

    def start(self) -> RedisServer:
        args = [
            REDIS_SERVER,
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        stop_process(self.process, timeout=5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the crash of a host, with no chance to close sockets cleanly first."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(*extra_args: str) -> Iterator[RedisServer]:
    server = RedisServer(extra_args=extra_args).start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def stalled_listener() -> Iterator[int]:
    """A port that accepts connections and never answers: the worst a Redis can do."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield int(sock.getsockname()[1])
