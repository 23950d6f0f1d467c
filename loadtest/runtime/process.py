"""The real runtime client, ``python -m awslambdaric HANDLER``, against an emulated Runtime API.

That command is what the Lambda Python base image's ``/lambda-entrypoint.sh`` runs. The process
gets the variables Lambda defines for a function and the function's own configuration on top,
and nothing else of this process's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Final, Self

from loadtest.runtime.api import (
    DEFAULT_WAIT_SECONDS,
    FUNCTION_NAME,
    RuntimeApi,
    now_ms,
)
from loadtest.servers import stop_process
from loadtest.tasks import seed_task

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DIALER_HANDLER: Final = "dialer_lambda.handler.handler"
STOP_TIMEOUT_SECONDS: Final = 5.0
# What the child keeps of this process's environment; Lambda starts the runtime with a clean
# one, so a variable exported in a developer's shell (MAX_CPS, REDIS_URL...) must not leak in.
INHERITED_VARIABLES: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def lambda_environment(api: RuntimeApi, handler: str = DIALER_HANDLER) -> dict[str, str]:
    """The variables Lambda defines for a function's runtime, pointed at ``api``."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]0",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(REPO_ROOT),
        "TZ": ":UTC",
    }


class RuntimeProcess:
    """``python -m awslambdaric HANDLER`` against ``api``, with ``env`` (the function's
    configuration) on top of Lambda's own variables; cwd and PYTHONPATH are the repository.

    Its stdout and stderr are collected line by line; `stop` ends it and returns once both are
    read to the end, so `stdout` is then complete. ``with`` starts and stops it.
    """

    def __init__(
        self, api: RuntimeApi, env: Mapping[str, str], handler: str = DIALER_HANDLER
    ) -> None:
        self.api = api
        inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        pythonpath = os.pathsep.join(
            part for part in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if part
        )
        self.env = {
            **inherited,
            **lambda_environment(api, handler),
            "PYTHONPATH": pythonpath,
            **env,
        }
        self.handler = handler
        self.argv: list[str] = [sys.executable, "-m", "awslambdaric", handler]
        """What is started: a subclass runs the same client elsewhere (in a container)."""
        self.cwd: Path = REPO_ROOT
        self.started_ms: int | None = None
        """Unix milliseconds just before the process was started."""
        self._process: subprocess.Popen[bytes] | None = None
        self._read_more = threading.Condition()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("a RuntimeProcess starts once")
        self.started_ms = now_ms()
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        for stream, sink in ((self._process.stdout, self._out), (self._process.stderr, self._err)):
            reader = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self, stream: IO[bytes], sink: list[str]) -> None:
        for line in stream:
            with self._read_more:
                sink.append(line.decode("utf-8", "replace"))
                self._read_more.notify_all()

    def wait(self, timeout: float = DEFAULT_WAIT_SECONDS) -> int:
        """Wait for the process to exit by itself (after a failed init) and return its code."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._join_readers()
        return code

    def wait_stdout(
        self, seen: Callable[[list[str]], bool], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> list[str]:
        """The lines of stdout read so far, once ``seen`` holds for them: a line is printed
        before the runtime posts the response, but read here some time after."""
        with self._read_more:
            if not self._read_more.wait_for(lambda: seen(self._out), timeout):
                raise TimeoutError(
                    f"stdout did not show what was awaited within {timeout:g}s; stdout:\n"
                    f"{''.join(self._out)}\nstderr:\n{''.join(self._err)}"
                )
            return list(self._out)

    def signal(self, number: int) -> None:
        """Send signal ``number`` to the runtime client (SIGKILL: the sandbox reclaimed,
        SIGSTOP and SIGCONT: the environment frozen and thawed)."""
        assert self._process is not None
        self._process.send_signal(number)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            stop_process(self._process, timeout=STOP_TIMEOUT_SECONDS)
        self._join_readers()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(STOP_TIMEOUT_SECONDS)

    @property
    def stdout(self) -> str:
        with self._read_more:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._read_more:
            return "".join(self._err)


def cold_start_seconds(env: Mapping[str, str], timeout: float = DEFAULT_WAIT_SECONDS) -> float:
    """Seconds from starting ``python -m awslambdaric`` for the dialer to the first response, a
    one-task batch queued beforehand: the import, the clients, one claim, permit and dial.

    ``env`` is the function's configuration (``REDIS_URL``, ``NODE_WORKER_URL``...). The task
    has a contact id of its own, so that it is dialed rather than skipped as a duplicate.
    """
    task = seed_task()
    task["contactId"] = f"cold-start-{uuid.uuid4().hex[:12]}"
    task["messageId"] = task["contactId"]
    with RuntimeApi() as api:
        request_id = api.invoke([task])
        with RuntimeProcess(api, env) as process:
            end = api.wait_end(request_id, timeout)
        assert process.started_ms is not None
        if end.outcome != "response":
            raise RuntimeError(f"the cold-start invocation failed: {end.body!r}")
        if end.json()["successful"] != 1:
            raise RuntimeError(f"the cold-start task was not dialed: {end.json()}")
    return (end.ended_ms - process.started_ms) / 1000.0
