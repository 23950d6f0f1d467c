"""podman on storage of the harness's own, so that what the image checks leave behind is in one
folder, and no other podman user on the machine shares (or breaks) it.

The storage driver is vfs: overlay needs kernel support that a sandbox may refuse, and vfs needs
none. Containers run under runc with the host's network: podman's default runtime (crun) fails
on this machine's mixed cgroups, and the Runtime API emulator, the worker stub and Redis listen
on the host's loopback. The hard limits are the ones such a sandbox accepts; Lambda's own
(nofile 1024) is the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CACHE_VARIABLE: Final = "CPS_IMAGE_CACHE"
"""Where the stand-in base and the podman storage live; outside any checkout, so that a fresh
clone (as CI makes) finds the base built by an earlier run."""
RUN_OPTIONS: Final = (
    "--runtime", "runc",
    "--network", "host",
    "--ulimit", "nofile=1024:1024",
    "--ulimit", "nproc=4096:4096",
)  # fmt: skip
TOOLS: Final = ("podman", "runc", "debootstrap")


def default_cache() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cps-limiter" / "image"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the end of what it printed."""


@dataclass(frozen=True)
class Podman:
    """podman with its storage under ``cache``."""

    cache: Path

    def __post_init__(self) -> None:
        if not self.cache.is_absolute():
            raise ValueError(f"the image cache must be an absolute path, not {self.cache}")

    def command(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.cache / "storage"),
            "--runroot", str(self.cache / "run"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
        completed = subprocess.run(
            self.command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            raise PodmanError(f"podman {args[0]} failed:\n{output[-6000:]}")
        return completed

    def exists(self, image: str) -> bool:
        return (
            subprocess.run(
                self.command("image", "exists", image),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def size_bytes(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout)

    def tags(self, repository: str) -> list[str]:
        listed = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository)
        return [line for line in listed.stdout.decode().split() if line.startswith(repository)]

    def prune(self) -> None:
        """Remove untagged images: a rebuilt image leaves its predecessor dangling."""
        self.run("image", "prune", "--force")

    def remove_container(self, name: str) -> None:
        subprocess.run(
            self.command("rm", "--force", "--ignore", name),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
