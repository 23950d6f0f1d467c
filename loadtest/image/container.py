"""The image run as Lambda runs it: its entrypoint and CMD, in a container, against the Runtime
API emulator."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Final

from loadtest.image.podman import RUN_OPTIONS, Podman
from loadtest.runtime.api import RuntimeApi
from loadtest.runtime.process import INHERITED_VARIABLES, RuntimeProcess, lambda_environment

# The image sets these itself, as the base image does.
IMAGE_DEFINED: Final = ("LAMBDA_TASK_ROOT",)


class ContainerRuntime(RuntimeProcess):
    """``podman run IMAGE`` against ``api``: the container gets Lambda's variables and the
    function's configuration ``env``, and nothing of this process's environment.

    The values go to podman in its own environment and the container takes them by name
    (``-e NAME``), so that a password in ``REDIS_URL`` is not on a command line.
    """

    def __init__(self, podman: Podman, image: str, api: RuntimeApi, env: Mapping[str, str]) -> None:
        super().__init__(api, env)
        self.podman = podman
        self.name = f"dialer-image-test-{uuid.uuid4().hex[:12]}"
        function_env = {
            name: value
            for name, value in {**lambda_environment(api), **env}.items()
            if name not in IMAGE_DEFINED
        }
        inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        self.env = {**inherited, **function_env}
        passed = [option for name in sorted(function_env) for option in ("--env", name)]
        self.argv = podman.command("run", "--rm", "--name", self.name, *RUN_OPTIONS, *passed, image)

    def started_at_ms(self) -> int:
        """Unix milliseconds when the container's process started, as podman recorded it."""
        inspected = self.podman.run(
            "container", "inspect", "--format", "{{.State.StartedAt.UnixNano}}", self.name
        )
        return int(inspected.stdout) // 1_000_000

    def stop(self) -> None:
        super().stop()
        # SIGTERM reaches the runtime client through podman; a container left behind by a
        # podman that died first is removed all the same.
        self.podman.remove_container(self.name)
