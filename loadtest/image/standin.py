"""A stand-in for the Lambda Python base image, for a machine that reaches no container registry.

What the Dockerfile relies on from ``public.ecr.aws/lambda/python``, and nothing more: ``python``
with pip, ``LAMBDA_TASK_ROOT=/var/task`` as the working folder, the runtime client
(``awslambdaric``) in ``/var/runtime``, and an entrypoint that runs ``python -m awslambdaric``
with the image's CMD. It is a minimal Debian root filesystem (debootstrap, run as root), imported
into podman. docs/deployment.md says what it does not cover.

Building it takes about a minute, so it is kept, tagged by a digest of what builds it: this
file and the certificate authorities the host adds to Debian's. pip inside it must trust those,
or a host whose egress re-signs TLS cannot reach the package index from the Dockerfile's steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from loadtest.image.podman import Podman

REPOSITORY: Final = "localhost/lambda-python-standin"
SUITE: Final = "bookworm"
PACKAGES: Final = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
RUNTIME_CLIENT: Final = "awslambdaric==4.2.2"
MIRROR_VARIABLE: Final = "DEBIAN_MIRROR"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
HOST_AUTHORITIES: Final = Path("/usr/local/share/ca-certificates")
# Found by the stand-in's own python3 through a .pth file, as the base image's python finds it.
RUNTIME_DIR: Final = "/var/runtime"
TASK_ROOT: Final = "/var/task"
ENTRYPOINT: Final = '#!/bin/sh\nexec python -m awslambdaric "$@"\n'
IMAGE_CONFIG: Final = (
    f"ENV LAMBDA_TASK_ROOT={TASK_ROOT}",
    f"ENV LAMBDA_RUNTIME_DIR={RUNTIME_DIR}",
    "ENV LANG=C.UTF-8",
    f"WORKDIR {TASK_ROOT}",
    'ENTRYPOINT ["/lambda-entrypoint.sh"]',
)
# Nothing the Dockerfile or the runtime reads: dropped as slim images drop them.
TRIMMED: Final = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
)
STEP_TIMEOUT_SECONDS: Final = 900


def host_authorities() -> list[Path]:
    if not HOST_AUTHORITIES.is_dir():
        return []
    return sorted(path for path in HOST_AUTHORITIES.rglob("*.crt") if path.is_file())


def cache_key() -> str:
    """A digest of every input of the build: a change to any of them builds a new base."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in host_authorities():
        digest.update(str(path.relative_to(HOST_AUTHORITIES)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def standin_base(podman: Podman) -> str:
    """The stand-in's image name, built unless a run before this one left it in the cache."""
    image = f"{REPOSITORY}:{cache_key()}"
    podman.cache.mkdir(parents=True, exist_ok=True)
    with _locked(podman.cache / "standin.lock"):
        if podman.exists(image):
            return image
        with tempfile.TemporaryDirectory(dir=podman.cache, prefix="standin-") as scratch:
            rootfs = Path(scratch) / "rootfs"
            _build_rootfs(rootfs, Path(scratch) / "debootstrap.log")
            _import(podman, rootfs, image)
        for stale in podman.tags(REPOSITORY):
            if stale != image:
                # --force: the last project image built on it goes too, rebuilt on the new one.
                podman.run("rmi", "--force", stale)
    return image


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two runs on one machine (CI and a developer) build the base once, one after the other."""
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_rootfs(rootfs: Path, log: Path) -> None:
    if os.geteuid() != 0:
        raise PermissionError("debootstrap and chroot build the stand-in base as root only")
    mirror = os.environ.get(MIRROR_VARIABLE) or DEFAULT_MIRROR
    _step(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        log,
    )
    for authority in host_authorities():
        target = rootfs / authority.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(authority, target)
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    _chroot(rootfs, log, "update-ca-certificates")
    _chroot(
        rootfs,
        log,
        "python", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
        "--break-system-packages", "--target", RUNTIME_DIR, RUNTIME_CLIENT,
    )  # fmt: skip
    for trimmed in TRIMMED:
        shutil.rmtree(rootfs / trimmed, ignore_errors=True)
    # The base image's pip installs where it is told; Debian's refuses the system's folders.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    (site,) = rootfs.glob("usr/lib/python3/dist-packages")
    (site / "lambda-runtime.pth").write_text(f"{RUNTIME_DIR}\n")
    entrypoint = rootfs / "lambda-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    (rootfs / TASK_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # podman provides the container's own.
    (rootfs / "etc" / "resolv.conf").write_text("")


def _chroot(rootfs: Path, log: Path, *command: str) -> None:
    _step(["chroot", str(rootfs), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *command], log)


def _step(command: list[str], log: Path) -> None:
    with log.open("ab") as out:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=STEP_TIMEOUT_SECONDS,
            check=False,
        )
    if completed.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"building the stand-in base: {command[0]} failed:\n{tail}")


def _import(podman: Podman, rootfs: Path, image: str) -> None:
    changes = [option for line in IMAGE_CONFIG for option in ("--change", line)]
    archive = rootfs.parent / "rootfs.tar"
    _step(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."],
        archive.parent / "tar.log",
    )
    podman.run("import", *changes, str(archive), image)
