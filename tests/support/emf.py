"""A checker for CloudWatch embedded metric format (EMF) lines, after the format's specification.

What it holds a line to (Amazon CloudWatch user guide, "Specification: Embedded metric format"):
the line is one JSON object and nothing else, at most 1 MB; its root has ``_aws``, an object
with ``Timestamp`` (integer milliseconds since the Unix epoch) and ``CloudWatchMetrics``, an
array of metric directives. A directive has ``Namespace`` (a string of 1 to 255 characters),
``Dimensions`` (at least one dimension set: an array of at most 30 dimension keys, strings of 1
to 255 characters) and ``Metrics`` (at most 100 definitions, each with a ``Name`` and optionally
a ``Unit`` from CloudWatch's list and a ``StorageResolution`` of 1 or 60). Every dimension key
is a member of the root with a string value; every metric name is a member of the root with a
number, or an array of at most 100 numbers. Names refer to root members as they are: ``"A.a"``
is a member called ``A.a``, never ``a`` inside ``A``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

MARKER: Final = '"_aws"'
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
MAX_NAME_LENGTH: Final = 255
MAX_DIMENSION_KEYS: Final = 30
MAX_METRICS: Final = 100
MAX_VALUES: Final = 100
STORAGE_RESOLUTIONS: Final = frozenset({1, 60})
UNITS: Final = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
# Not in the specification, which only asks for milliseconds: a plausible range, so that a
# timestamp in seconds or microseconds (valid integers both) is caught.
_EARLIEST_MS: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_LATEST_MS: Final = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MISSING: Final = object()


def emf_lines(output: str) -> list[str]:
    """The lines of ``output`` that mean to be EMF documents (they mention ``"_aws"``)."""
    return [line for line in output.splitlines() if MARKER in line]


def line_problems(line: str) -> list[str]:
    """What is wrong with one line as an EMF document; empty when it is valid."""
    if len(line.encode()) > MAX_DOCUMENT_BYTES:
        return [f"the line is {len(line.encode())} bytes, more than {MAX_DOCUMENT_BYTES}"]
    try:
        document = json.loads(line, parse_constant=_reject_constant)
    except ValueError as error:
        return [f"not one JSON value: {error}"]
    return document_problems(document)


def document_problems(document: Any) -> list[str]:
    """What is wrong with a parsed EMF document; empty when it is valid."""
    if not isinstance(document, dict):
        return [f"the root is {_kind(document)}, not an object"]
    metadata = document.get("_aws")
    if not isinstance(metadata, dict):
        return [f"_aws is {_kind(metadata)}, not an object"]
    problems = _timestamp_problems(metadata.get("Timestamp", _MISSING))
    directives = metadata.get("CloudWatchMetrics", _MISSING)
    if not isinstance(directives, list):
        return [*problems, f"_aws.CloudWatchMetrics is {_kind(directives)}, not an array"]
    for index, directive in enumerate(directives):
        problems += _directive_problems(document, directive, f"_aws.CloudWatchMetrics[{index}]")
    return problems


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    if value is None:
        return "null"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, str):
        return f"{where} is {_kind(value)}, not a string"
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        return f"{where} must be 1 to {MAX_NAME_LENGTH} characters, got {len(value)}"
    return None


def _timestamp_problems(value: Any) -> list[str]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [f"_aws.Timestamp is {_kind(value)}, not an integer"]
    if not _EARLIEST_MS <= value < _LATEST_MS:
        return [f"_aws.Timestamp {value} is not milliseconds since the epoch"]
    return []


def _directive_problems(root: Mapping[str, Any], directive: Any, where: str) -> list[str]:
    if not isinstance(directive, dict):
        return [f"{where} is {_kind(directive)}, not an object"]
    problems = [
        problem
        for problem in [_name_problem(directive.get("Namespace", _MISSING), f"{where}.Namespace")]
        if problem
    ]
    dimensions = directive.get("Dimensions", _MISSING)
    if not isinstance(dimensions, list) or not dimensions:
        problems.append(f"{where}.Dimensions must be a non-empty array of dimension sets")
    else:
        for index, dimension_set in enumerate(dimensions):
            problems += _dimension_set_problems(root, dimension_set, f"{where}.Dimensions[{index}]")
    metrics = directive.get("Metrics", _MISSING)
    if not isinstance(metrics, list):
        problems.append(f"{where}.Metrics is {_kind(metrics)}, not an array")
    elif len(metrics) > MAX_METRICS:
        problems.append(f"{where}.Metrics has {len(metrics)} definitions, more than {MAX_METRICS}")
    else:
        for index, definition in enumerate(metrics):
            problems += _metric_problems(root, definition, f"{where}.Metrics[{index}]")
    return problems


def _dimension_set_problems(root: Mapping[str, Any], keys: Any, where: str) -> list[str]:
    if not isinstance(keys, list):
        return [f"{where} is {_kind(keys)}, not an array of dimension keys"]
    if len(keys) > MAX_DIMENSION_KEYS:
        return [f"{where} has {len(keys)} keys, more than {MAX_DIMENSION_KEYS}"]
    problems: list[str] = []
    for index, key in enumerate(keys):
        problem = _name_problem(key, f"{where}[{index}]")
        if problem:
            problems.append(problem)
        elif not isinstance(root.get(key), str):
            problems.append(
                f"dimension {key!r} ({where}) is {_kind(root.get(key, _MISSING))} on the root, "
                "not a string"
            )
    return problems


def _metric_problems(root: Mapping[str, Any], definition: Any, where: str) -> list[str]:
    if not isinstance(definition, dict):
        return [f"{where} is {_kind(definition)}, not an object"]
    name = definition.get("Name", _MISSING)
    problem = _name_problem(name, f"{where}.Name")
    if problem:
        return [problem]
    problems: list[str] = []
    unit = definition.get("Unit", "None")
    if not isinstance(unit, str) or unit not in UNITS:
        problems.append(f"{where}.Unit {unit!r} is not a CloudWatch unit")
    if "StorageResolution" in definition and (
        not _is_number(definition["StorageResolution"])
        or definition["StorageResolution"] not in STORAGE_RESOLUTIONS
    ):
        problems.append(f"{where}.StorageResolution must be 1 or 60")
    value = root.get(name, _MISSING)
    if isinstance(value, list):
        if not all(_is_number(item) for item in value) or len(value) > MAX_VALUES:
            problems.append(f"metric {name!r} must be an array of at most {MAX_VALUES} numbers")
    elif not _is_number(value):
        problems.append(f"metric {name!r} is {_kind(value)} on the root, not a number")
    return problems
