"""The children that take the measurements needing a process of their own (`loadtest._probe`):
long-lived ones answering commands, and one-shot ones."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import IO, Any

from loadtest.servers import ROOT, child_env

CHILD_TIMEOUT = 60.0
PROBE = (sys.executable, "-m", "loadtest._probe")


class Child:
    """A `loadtest._probe` process (or another ``module``) answering one JSON line per
    command."""

    def __init__(self, *args: str, module: str = PROBE[-1]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )
        self.read()  # {"ready": true}

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"probe {self.process.args!r} exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.read()

    def send(self, command: str) -> None:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_once(*args: str) -> dict[str, Any]:
    """Run a one-shot `loadtest._probe` command in a fresh interpreter."""
    done = subprocess.run(
        [*PROBE, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(),
        timeout=CHILD_TIMEOUT,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer
