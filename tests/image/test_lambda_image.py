"""The image a user deploys, built with the project's Dockerfile and run as Lambda runs it.

No registry is reachable, so the base is a stand-in for the Lambda Python base image
(`loadtest.image.standin`); podman builds the Dockerfile from this checkout on it, and runs the
image's own entrypoint and CMD against the Runtime API emulator, the worker stub and a real
redis-server (an image holds no extras, so ``memory://`` cannot serve it). ``make image-test``
runs this module alone; ``make test`` leaves it out (marker ``image``).
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from loadtest.image.container import ContainerRuntime
from loadtest.image.podman import RUN_OPTIONS, Podman, default_cache, missing_tools
from loadtest.image.project import BuiltImage, build_image
from loadtest.runtime.api import RuntimeApi
from loadtest.servers import redis_server
from loadtest.worker_stub import WorkerStub
from loadtest.worker_stub.records import Call
from tests.support.dialer import make_batch, phone_of, seed_result
from tests.support.report import report_line

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

BATCH = 10
INIT_BUDGET_SECONDS = 2.0
# Whatever the image's own dependency closure says, these come only with extras or the harness.
NEVER_IN_THE_IMAGE = frozenset(
    {"fakeredis", "opentelemetry-sdk", "limits", "locust", "pytest", "matplotlib", "lupa"}
)
TASK_ROOT = "/var/task"
DESCRIBE_TASK_ROOT = textwrap.dedent(
    """
    import json, os, platform, sys
    from importlib import metadata

    root = sys.argv[1]
    dists = {d.metadata["Name"]: d for d in metadata.distributions(path=[root])}
    owned = {os.path.normpath(str(f)) for d in dists.values() for f in d.files or []}
    # pip --target records scripts where its scratch prefix had them, not under bin/.
    owned |= {
        f"bin/{e.name}"
        for d in dists.values()
        for e in d.entry_points
        if e.group == "console_scripts"
    }
    unowned = sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
        if os.path.relpath(os.path.join(folder, name), root) not in owned
    )
    markers = {
        "implementation_name": sys.implementation.name,
        "implementation_version": platform.python_version(),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }
    print(json.dumps({
        "requires": {name: d.requires or [] for name, d in dists.items()},
        "unowned": unowned,
        "markers": markers,
        # The build stage's sources and wheel; an empty mount point may stay, a file may not.
        "leftovers": [
            os.path.join(folder, name)
            for top in ("/src", "/dist", "/tmp")
            for folder, _, names in os.walk(top)
            for name in names
        ],
    }))
    """
)


@pytest.fixture(scope="module")
def podman() -> Podman:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the image check needs {missing} (Debian packages of the same names)")
    return Podman(default_cache())


@pytest.fixture(scope="module")
def image(podman: Podman, request: pytest.FixtureRequest) -> BuiltImage:
    built = build_image(podman)
    for line in built.summary():
        report_line(request.config, line)
    return built


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def stub() -> Iterator[WorkerStub]:
    with WorkerStub() as worker:
        yield worker


@pytest.fixture(scope="module")
def runtime(
    podman: Podman, image: BuiltImage, redis_url: str, stub: WorkerStub
) -> Iterator[ContainerRuntime]:
    """One execution environment for the module; its tests use campaigns of their own."""
    env = {"REDIS_URL": redis_url, "NODE_WORKER_URL": stub.url, "DIAL_TIMEOUT_SECONDS": "2"}
    with RuntimeApi() as api, ContainerRuntime(podman, image.name, api, env) as container:
        yield container
    assert api.violations == []


def _batch(campaign: str) -> list[dict[str, Any]]:
    """The seed's tasks in a campaign of the test's own: each test's claims are its own."""
    batch = make_batch(BATCH, campaignId=campaign)
    for task in batch:
        task["campaign"]["id"] = campaign
    return batch


def _calls(stub: WorkerStub, campaign: str) -> list[Call]:
    return [call for call in stub.calls if (call.body or {}).get("campaignId") == campaign]


def test_the_image_serves_a_batch_of_the_seeds_tasks(
    runtime: ContainerRuntime, stub: WorkerStub
) -> None:
    campaign = f"image-{uuid.uuid4().hex[:8]}"

    end = runtime.api.run(_batch(campaign), wait=60)

    assert (end.outcome, end.json()) == (
        "response",
        seed_result(BATCH),
    ), runtime.stderr
    dialed = sorted(call.phone_number or "" for call in _calls(stub, campaign))
    assert dialed == [phone_of(index) for index in range(BATCH)]


def test_a_batch_redelivered_to_the_image_is_all_duplicates(
    runtime: ContainerRuntime, stub: WorkerStub
) -> None:
    campaign = f"image-{uuid.uuid4().hex[:8]}"
    runtime.api.run(_batch(campaign), wait=60)

    redelivered = runtime.api.run(_batch(campaign), wait=60)

    assert redelivered.json() == seed_result(BATCH, successful=0, duplicates=BATCH)
    assert len(_calls(stub, campaign)) == BATCH


def test_the_init_phase_takes_under_two_seconds(
    runtime: ContainerRuntime, request: pytest.FixtureRequest
) -> None:
    """From the container's process start to the runtime's first ``/next``: the import of the
    handler's module and the clients it builds, as Lambda bills the init phase."""
    runtime.api.wait_init_done(timeout=60)
    done_ms = runtime.api.init_done_ms
    assert done_ms is not None
    assert runtime.started_ms is not None
    started_ms = runtime.started_at_ms()

    init_seconds = (done_ms - started_ms) / 1000
    report_line(
        request.config,
        f"init phase {init_seconds:.2f} s (container start to first /next); "
        f"{(done_ms - runtime.started_ms) / 1000:.2f} s from `podman run`",
    )

    assert 0 <= init_seconds < INIT_BUDGET_SECONDS


def test_the_image_holds_the_two_packages_and_their_runtime_dependencies_only(
    podman: Podman, image: BuiltImage
) -> None:
    describe = ["-I", "-c", DESCRIBE_TASK_ROOT, TASK_ROOT]
    described = json.loads(
        podman.run(
            "run", "--rm", *RUN_OPTIONS, "--entrypoint", "python", image.name, *describe
        ).stdout
    )
    installed = {canonicalize_name(name) for name in described["requires"]}

    needed = _closure("cps-limiter", described["requires"], described["markers"])

    assert installed & NEVER_IN_THE_IMAGE == set()
    assert installed == needed
    assert (described["unowned"], described["leftovers"]) == ([], [])


def _closure(root: str, requires: dict[str, list[str]], markers: dict[str, str]) -> set[str]:
    """The distributions ``root`` needs, without extras but those its requirements ask for,
    markers evaluated for the image's interpreter."""
    by_name = {canonicalize_name(name): reqs for name, reqs in requires.items()}
    wanted: dict[str, set[str]] = {canonicalize_name(root): set()}
    pending = [canonicalize_name(root)]
    while pending:
        name = pending.pop()
        for line in by_name.get(name, []):
            requirement = Requirement(line)
            extras = {"", *wanted[name]}
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({**markers, "extra": extra}) for extra in extras
            ):
                continue
            dependency = canonicalize_name(requirement.name)
            before = wanted.get(dependency)
            merged = (before or set()) | requirement.extras
            if before is None or merged != before:
                wanted[dependency] = merged
                pending.append(dependency)
    return set(wanted)
