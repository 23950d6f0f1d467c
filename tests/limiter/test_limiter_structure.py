"""The package's shape: modules that import each other in one direction, and an AsyncLimiter
that mirrors every public member of Limiter."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import cps_limiter
from cps_limiter import AsyncLimiter, Limiter

PACKAGE = Path(cps_limiter.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("_*.py") if path.stem != "__init__")
MAX_LINES = 300
WITHOUT_IO = {"from_url", "key_base", "lease_key", "refused_command", "rules_base", "set_peers"}
"""Limiter's public methods that do no I/O, and so stay plain functions on AsyncLimiter."""
ASYNC_NAMES = {"close": "aclose"}


def package_imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, wherever in it the import stands."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                imported.update(alias.name for alias in node.names)
            else:
                imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            imported.update(name.split(".")[1] for name in names if name.startswith("cps_limiter."))
    return imported


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that leads from ``start`` back to it, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, path = stack.pop()
        for imported in sorted(graph.get(module, ())):
            if imported == start:
                return [*path, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*path, imported]))
    return None


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports(module: str) -> None:
    assert importlib.import_module(f"cps_limiter.{module}")


def test_no_module_imports_itself_through_others() -> None:
    graph = {module: package_imports(module) for module in MODULES}
    assert {m: cycle_from(m, graph) for m in MODULES if cycle_from(m, graph)} == {}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_has_at_most_300_lines(module: str) -> None:
    lines = (PACKAGE / f"{module}.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES


def public_members(cls: type) -> dict[str, object]:
    return {
        name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")
    }


@pytest.mark.parametrize("name", sorted(public_members(Limiter)))
def test_the_async_limiter_has_each_public_member_of_the_limiter(name: str) -> None:
    mine = public_members(Limiter)[name]
    theirs = public_members(AsyncLimiter).get(ASYNC_NAMES.get(name, name))
    assert theirs is not None, f"AsyncLimiter lacks {name}"
    if isinstance(mine, property):
        assert isinstance(theirs, property)
    elif name in WITHOUT_IO:
        assert not inspect.iscoroutinefunction(getattr(AsyncLimiter, name))
    else:
        assert inspect.iscoroutinefunction(getattr(AsyncLimiter, ASYNC_NAMES.get(name, name)))
