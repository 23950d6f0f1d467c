"""The versions `make test-lowest` installs are the floors pyproject.toml declares.

constraints/lowest.txt pins each runtime dependency at its ``>=`` floor, so that CI runs the
suite against the oldest versions a user may have. A floor raised in one file and not in the
other would test versions nobody is promised, or promise versions nobody tests.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT_PATH = PROJECT_ROOT / "pyproject.toml"
CONSTRAINTS_PATH = PROJECT_ROOT / "constraints" / "lowest.txt"

API = "opentelemetry-api"
# No runtime dependency, but the tracing and test extras install it, and each SDK release
# requires its own API release exactly: at the API's floor the SDK must be the same release.
SDK = "opentelemetry-sdk"


@cache
def _project() -> dict[str, Any]:
    with PYPROJECT_PATH.open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    requirements = [Requirement(line) for line in lines]
    named = {canonicalize_name(r.name): r for r in requirements}
    assert len(named) == len(requirements), f"a package is listed twice in {lines}"
    return named


def _runtime() -> dict[str, Requirement]:
    return _by_name(_project()["dependencies"])


def _floor(requirement: Requirement) -> Version:
    floors = [s.version for s in requirement.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{requirement} should declare exactly one >= floor"
    return Version(floors[0])


@cache
def _pins() -> dict[str, Version]:
    lines = [line.split("#", 1)[0].strip() for line in CONSTRAINTS_PATH.read_text().splitlines()]
    pins: dict[str, Version] = {}
    for name, requirement in _by_name([line for line in lines if line]).items():
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        assert len(versions) == len(requirement.specifier) == 1, f"{requirement} is no pin"
        pins[name] = Version(versions[0])
    return pins


RUNTIME = sorted(_runtime())
EXTRAS_WITH_SDK = sorted(
    extra for extra, lines in _project()["optional-dependencies"].items() if SDK in _by_name(lines)
)


@pytest.mark.parametrize("name", RUNTIME)
def test_each_runtime_dependency_is_pinned_at_its_floor(name: str) -> None:
    assert _pins().get(name) == _floor(_runtime()[name])


def test_the_constraints_pin_only_the_runtime_dependencies_and_the_sdk() -> None:
    assert set(_pins()) == {*RUNTIME, SDK}


def test_the_sdk_is_pinned_at_the_api_floor() -> None:
    assert _pins()[SDK] == _floor(_runtime()[API])


@pytest.mark.parametrize("extra", EXTRAS_WITH_SDK)
def test_an_extra_with_the_sdk_admits_it_from_the_api_floor(extra: str) -> None:
    sdk = _by_name(_project()["optional-dependencies"][extra])[SDK]
    assert _floor(sdk) == _floor(_runtime()[API])
