"""The project's image, built from a checkout with its own Dockerfile on the stand-in base."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.image.podman import Podman
from loadtest.image.standin import standin_base

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
# One fixed name: each build replaces the last one's image instead of adding to the storage.
IMAGE: Final = "localhost/dialer-worker:image-test"
BUILD_TIMEOUT_SECONDS: Final = 900


@dataclass(frozen=True)
class BuiltImage:
    name: str
    base: str
    base_seconds: float
    """Getting the stand-in base: about a minute to build, next to nothing from the cache."""
    build_seconds: float
    size_bytes: int

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ValueError(f"an image of {self.size_bytes} bytes")

    def summary(self) -> list[str]:
        return [
            f"stand-in base {self.base}: {self.base_seconds:.1f} s",
            f"image {self.name}: built in {self.build_seconds:.1f} s, "
            f"{self.size_bytes / 1e6:.0f} MB",
        ]


def build_image(podman: Podman, context: Path = REPO_ROOT) -> BuiltImage:
    """``podman build`` of ``context`` with its Dockerfile, ``BASE_IMAGE`` the stand-in.

    ``--layers=false`` commits no image per step: on vfs each would be a full copy of the root
    filesystem. ``--pull=never``: there is no registry to ask.
    """
    started = time.monotonic()
    base = standin_base(podman)
    based = time.monotonic()
    podman.run(
        "build",
        "--isolation", "chroot",
        "--network", "host",
        "--layers=false",
        "--pull=never",
        "--build-arg", f"BASE_IMAGE={base}",
        "--tag", IMAGE,
        "--file", str(context / "Dockerfile"),
        str(context),
        timeout=BUILD_TIMEOUT_SECONDS,
    )  # fmt: skip
    built = time.monotonic()
    podman.prune()
    return BuiltImage(
        name=IMAGE,
        base=base,
        base_seconds=based - started,
        build_seconds=built - based,
        size_bytes=podman.size_bytes(IMAGE),
    )
