"""What the container image holds is enough to run the dialer.

No Docker engine runs here, so this does what the Dockerfile does: build the wheel from the build
context (the files ``.dockerignore`` admits), install it with its runtime dependencies alone (no
extras) into a fresh virtual environment, and handle a batch from there, away from the project
tree, against a real worker stub and a real Redis.

The run also hides the machine's time-zone database (``PYTHONTZPATH=""``), as a slim base image
may have none: campaign calling windows must resolve from what the package installs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.servers import redis_server
from loadtest.worker_stub import WorkerStub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_SECONDS = 480
RUN_TIMEOUT_SECONDS = 60
CAMPAIGN_TIMEZONE = "Asia/Jerusalem"
# Packages that only the extras bring: finding any of them would mean the image test proves less
# than the image needs.
EXTRAS_ONLY = ("fakeredis", "opentelemetry.sdk", "matplotlib", "locust", "pytest")

HANDLE_BATCH = textwrap.dedent(
    """
    import json, sys
    import dialer_lambda.handler as entry

    event = json.loads(sys.argv[1])
    result = entry.handler(event, None)
    with open(sys.argv[2], "w") as out:
        json.dump({"result": result, "module": entry.__file__}, out)
    """
)


@dataclass(frozen=True)
class InstalledPackage:
    python: Path
    workdir: Path


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` leaves ``path`` (relative, with "/") out of the build context:
    the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        globs = [glob, glob.removeprefix("**/")] if glob.startswith("**/") else [glob]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not negated
    return ignored


def build_context(target: Path) -> Path:
    """The files that ``docker build .`` would send, copied under ``target``."""
    lines = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    admitted = {p.removeprefix("!").strip("/") for p in patterns if p.startswith("!")}
    for folder, dirs, files in os.walk(PROJECT_ROOT):
        here = Path(folder).relative_to(PROJECT_ROOT).as_posix()
        here = "" if here == "." else here
        # Skip folders that nothing re-admits (.git, .venv): walking them costs minutes.
        dirs[:] = [
            d
            for d in dirs
            if not _ignored(f"{here}/{d}".lstrip("/"), patterns)
            or any(a.startswith(f"{here}/{d}".lstrip("/")) for a in admitted)
        ]
        for name in files:
            relative = f"{here}/{name}".lstrip("/")
            if not _ignored(relative, patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT_ROOT / relative, target / relative)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledPackage:
    root = tmp_path_factory.mktemp("image")
    dist = root / "dist"
    context = build_context(root / "context")
    _pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(dist), str(context))
    (wheel,) = dist.glob("*.whl")
    venv.create(root / "venv", with_pip=True, clear=True)
    python = root / "venv" / "bin" / "python"
    _pip(str(python), "install", str(wheel))
    workdir = root / "work"
    workdir.mkdir()
    return InstalledPackage(python=python, workdir=workdir)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    # Our own server: the handler uses the global "cps:<ts>" keys, which other tests on the shared
    # Redis may be filling at the same moment.
    with redis_server() as server:
        yield server.url


@pytest.fixture
def worker() -> Iterator[WorkerStub]:
    with WorkerStub() as stub:
        yield stub


def test_the_build_context_holds_the_packages_and_no_tests(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")

    assert (context / "cps_limiter" / "__init__.py").is_file()
    assert (context / "dialer_lambda" / "handler.py").is_file()
    assert not (context / "tests").exists()
    assert not list(context.rglob("__pycache__"))


@pytest.mark.parametrize("module", EXTRAS_ONLY)
def test_the_runtime_install_leaves_out_the_extras(
    installed: InstalledPackage, module: str
) -> None:
    found = _run(
        installed,
        ["-c", f"import importlib.util as u; print(u.find_spec({module!r}))"],
        env={},
    )
    assert found.stdout.strip() == "None"


def test_the_installed_package_resolves_time_zones_without_a_system_database(
    installed: InstalledPackage,
) -> None:
    resolved = _run(
        installed,
        ["-c", f"from zoneinfo import ZoneInfo; print(ZoneInfo({CAMPAIGN_TIMEZONE!r}).key)"],
        env={"PYTHONTZPATH": ""},
    )
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == CAMPAIGN_TIMEZONE


def test_the_installed_package_dials_a_batch_at_the_worker(
    installed: InstalledPackage, redis_url: str, worker: WorkerStub
) -> None:
    phones = [f"+97250123456{n}" for n in range(2)]
    tasks = [_task(f"contact-{uuid.uuid4().hex[:8]}", phone) for phone in phones]
    result_path = installed.workdir / f"result-{uuid.uuid4().hex}.json"

    run = _run(
        installed,
        ["-c", HANDLE_BATCH, json.dumps(tasks), str(result_path)],
        env={"REDIS_URL": redis_url, "NODE_WORKER_URL": worker.url, "PYTHONTZPATH": ""},
    )

    assert run.returncode == 0, run.stderr
    outcome = json.loads(result_path.read_text())
    assert Path(outcome["module"]).is_relative_to(installed.python.parents[1])
    result = outcome["result"]
    assert (result["successful"], result["errors"]) == (len(tasks), [])
    assert sorted(call.phone_number or "" for call in worker.calls) == sorted(phones)


def _task(contact_id: str, phone: str) -> dict[str, object]:
    return {
        "messageId": str(uuid.uuid4()),
        "campaignId": "campaign-image",
        "contactId": contact_id,
        "phoneNumber": phone,
        "metadata": {"firstName": "Dana"},
        "attempts": 0,
        "campaign": {
            "id": "campaign-image",
            "name": "Image check",
            "type": "voice",
            "status": "active",
            "config": {
                "audioFileUrl": "https://example.com/audio.mp3",
                "ivrFlow": {"nodes": [], "startNodeId": "node-1"},
                "callingWindows": [{"start": "00:00", "end": "24:00"}],
                "maxConcurrentCalls": 100,
            },
            "timezone": CAMPAIGN_TIMEZONE,
        },
        "enrichedAt": "2024-01-15T10:30:00.000Z",
    }


def _pip(python: str, *args: str) -> None:
    completed = subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]


def _run(
    installed: InstalledPackage, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    # Isolated mode and a bare environment: nothing of the project tree or of this test's
    # interpreter can leak into what the fresh install imports.
    return subprocess.run(
        [str(installed.python), "-I", *args],
        cwd=installed.workdir,
        env={"PATH": os.defpath, "LANG": "C.UTF-8", **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


def test_the_wheel_holds_the_two_products_and_no_harness(tmp_path: Path) -> None:
    _pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(tmp_path), str(PROJECT_ROOT))
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()

    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {
        "cps_limiter",
        "dialer_lambda",
    }
    harness = ("simulate", "worker_stub", "loadtest", "tests/", "_example", "servers", "runtime")
    assert [name for name in names if any(part in name for part in harness)] == []
