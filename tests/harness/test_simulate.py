"""The campaign simulation (`make demo`): the real handler over a simulated pipe and the stub."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

from cps_limiter import Limiter
from dialer_lambda import Settings
from loadtest.simulate import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    CounterWatch,
    Figure,
    Hooks,
    SimulationConfig,
    StrategyName,
    Summary,
    concurrency_for,
    limit_in_force,
    main,
    make_tasks,
    max_in_window,
    mean_rate,
    mean_trailing,
    per_bucket,
    run_simulation,
    steady_part,
    tasks_for,
    tenth_target,
    trailing_series,
)
from loadtest.simulate import compare as compare_module
from loadtest.simulate.config import parse_args
from loadtest.simulate.monitor import Monitor
from loadtest.simulate.pipe import Message, Pipe
from loadtest.simulate.targets import NO_COUNTERS
from loadtest.worker_stub import StubHealth, WorkerStub
from tests.support.dialer import dialer_for

TASKS = 300
MAX_CPS = 100
INVALID = 3  # 1% of TASKS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def small_run(out: Path, strategy: StrategyName, **changes: object) -> SimulationConfig:
    """300 tasks at 100 calls/s: a few seconds. A short visibility timeout lets the invalid
    tasks reach the dead-letter queue quickly; a generous wait budget keeps paced tasks out."""
    fields: dict[str, object] = {
        "strategy": strategy,
        "tasks": TASKS,
        "max_cps": MAX_CPS,
        "concurrency": 20,
        "worker_delay_ms": 10.0,
        "duplicate_rate": 0.05,
        "visibility_timeout": 0.2,
        "max_wait": 5.0,
        "out": out,
        "progress": False,
    }
    return SimulationConfig(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=STRATEGIES)
def summary(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Summary:
    out = tmp_path_factory.mktemp(f"demo-{request.param}")
    return run_simulation(small_run(out, request.param))


# -- a whole run, per strategy --------------------------------------------------------------


def test_every_task_is_either_done_or_dead_lettered(summary: Summary) -> None:
    assert summary.settled + summary.dead_lettered == TASKS
    assert summary.ok


def test_the_outcomes_of_all_deliveries_add_up(summary: Summary) -> None:
    outcomes = summary.successful + summary.failed + summary.rate_limited + summary.duplicates
    assert summary.invocation_errors == 0
    assert outcomes == summary.deliveries
    assert summary.deliveries == TASKS + summary.redeliveries + summary.duplicate_deliveries


def test_duplicate_deliveries_are_caught_and_nobody_is_called_twice(summary: Summary) -> None:
    assert summary.pace is not None
    assert summary.duplicate_deliveries > 0
    assert summary.duplicates == summary.duplicate_deliveries
    assert summary.pace.placed_twice == 0


def test_invalid_tasks_go_round_the_queue_into_the_dead_letter_queue(summary: Summary) -> None:
    assert summary.dead_letter_reasons == {"invalid task": INVALID}
    assert summary.failed >= INVALID * 5


def test_each_task_dialed_reached_the_worker_once(summary: Summary) -> None:
    assert summary.pace is not None
    assert summary.pace.worker_calls == summary.settled


# Windows' worth of calls beyond the span that each strategy allows: a span of s seconds holds
# at most floor(s) + 1 sliding windows' worth, meets up to floor(s) + 2 fixed windows, and
# the token bucket adds its burst (MAX_CPS) to s seconds at the rate.
EXTRA_WINDOWS: dict[str, int] = {"paced": 1, "fixed": 2, "sliding": 1, "token": 1}


def test_over_the_run_the_calls_keep_to_the_limit(summary: Summary) -> None:
    """10% on top for threads that deliver a burst a little late."""
    assert summary.pace is not None
    windows = summary.pace.span_seconds + EXTRA_WINDOWS[summary.strategy]
    assert summary.pace.worker_calls <= 1.1 * MAX_CPS * windows


def test_the_run_is_paced_by_the_limit_not_held_back(summary: Summary) -> None:
    assert summary.pace is not None
    assert summary.pace.worker_calls >= 0.6 * MAX_CPS * summary.pace.span_seconds


def test_the_chart_is_a_png_that_decodes(summary: Summary) -> None:
    assert summary.pace is not None
    assert summary.pace.chart is not None
    assert summary.pace.chart.read_bytes().startswith(PNG_SIGNATURE)
    height, width, _ = imread(summary.pace.chart).shape
    assert (width, height) == (1200, 700)


def test_the_handler_log_holds_its_json_lines_and_metrics(summary: Summary) -> None:
    lines = summary.handler_log.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    events = Counter(record.get("event") for record in records)
    assert events["batch_start"] == summary.invocations
    assert sum(1 for record in records if "_aws" in record) == summary.invocations


def test_the_summary_renders_every_figure(summary: Summary) -> None:
    text = summary.render()
    for figure in ("successful", "rateLimited", "duplicates", "dead-lettered", "demand"):
        assert figure in text
    for pacing in summary.pacing:
        assert f"{pacing.label}: " in text
        assert pacing.verdict in text
    assert f"strategy {summary.strategy}" in text


# -- a run against a worker given by URL ----------------------------------------------------


def test_the_busiest_second_is_counted_exactly_over_the_workers_record(tmp_path: Path) -> None:
    with WorkerStub() as stub:
        result = run_simulation(small_run(tmp_path, "fixed", worker_url=stub.url))
        times = [call.at for call in stub.calls]

    assert result.pace is not None
    assert result.pace.worker_calls == len(times)
    assert result.pace.max_in_any_second == max_in_window(times)[0]


def test_a_cpu_spike_at_the_worker_cuts_the_pace_to_a_quarter(tmp_path: Path) -> None:
    """The first second's calls go at once; the rest must wait for the cut limit. A short wait
    budget keeps them from being reserved at the old limit before the spike."""
    spike_at = 0.5
    with WorkerStub() as stub:
        config = small_run(
            tmp_path,
            "sliding",
            tasks=150,
            worker_url=stub.url,
            cpu_spike_at=spike_at,
            max_wait=1.0,
            visibility_timeout=1.0,
        )
        result = run_simulation(config)
        times = sorted(call.at for call in stub.calls)
    late = [at for at in times if at >= times[0] + spike_at + 0.5]

    assert [limit for _, limit in result.limit_changes] == [MAX_CPS, MAX_CPS / 4]
    assert result.cpu_spiked_at is not None
    assert result.cpu_spiked_at >= spike_at
    assert late
    # Well under the next tier (half): a burst the threads deliver a little late may add a few.
    assert max_in_window(late)[0] < MAX_CPS / 2


def test_custom_hooks_replace_the_built_in_health_agent(tmp_path: Path) -> None:
    seen: list[StubHealth] = []
    asked: list[bool] = []

    def limit_in_force() -> float:
        asked.append(True)
        return MAX_CPS

    hooks = Hooks(on_health=seen.append, limit_in_force=limit_in_force)
    config = small_run(tmp_path, "token", tasks=100, cpu_spike_at=0.3, cpu_spike_percent=91.0)

    run_simulation(config, hooks)

    assert seen[0].cpu_percent < 80.0
    assert seen[-1].cpu_percent == 91.0
    assert asked


def test_the_health_agent_samples_the_worker_before_it_raises_the_cpu() -> None:
    """However late its thread gets to run, the chart has the health before the spike."""
    with WorkerStub(cpu_percent=20.0) as stub:
        monitor = Monitor(
            stub,
            on_health=lambda _health: None,
            limit_in_force=lambda: MAX_CPS,
            started=time.time() - 10.0,
            cpu_spike_at=0.3,
            cpu_spike_percent=91.0,
        )
        monitor.stop.set()  # one round
        monitor.run()

    assert [health.cpu_percent for _, health in monitor.health] == [20.0, 91.0]
    assert monitor.spiked_at is not None
    assert monitor.spiked_at >= 10.0


# -- the limit in force, as the chart draws it ----------------------------------------------


@pytest.fixture
def adaptive_limiters() -> Iterator[dict[str, Limiter]]:
    """The limiter of a dialer of each strategy at MAX_CPS, as the simulation's handler has."""
    prefix = f"sim-test-{uuid.uuid4().hex[:8]}"
    dialers = {
        name: dialer_for(
            {
                "REDIS_URL": "memory://",
                "CPS_STRATEGY": name,
                "MAX_CPS": str(MAX_CPS),
                "CPS_KEY_PREFIX": f"{prefix}-{name}",
            }
        )
        for name in STRATEGIES
    }
    yield {name: dialer.limiter for name, dialer in dialers.items()}
    for dialer in dialers.values():
        dialer.close()


@pytest.mark.parametrize(
    ("cpu", "answer_rate", "cap", "expected"),
    [
        (None, None, None, MAX_CPS),
        (50.0, 0.6, None, MAX_CPS),
        (85.0, 0.6, None, MAX_CPS / 2),
        (95.0, 0.6, None, MAX_CPS / 4),
        (50.0, 0.1, None, MAX_CPS / 2),
        (None, None, 40, 40),
        (85.0, 0.6, 40, 20),
    ],
)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_limit_in_force_follows_the_health_report_and_the_cap(
    adaptive_limiters: dict[str, Limiter],
    strategy: str,
    cpu: float | None,
    answer_rate: float | None,
    cap: int | None,
    expected: float,
) -> None:
    limiter = adaptive_limiters[strategy]
    if cpu is not None:
        limiter.report_health(cpu=cpu, answer_rate=answer_rate)
    if cap is not None:
        limiter.set_cap(cap, ttl=60)

    assert limit_in_force(limiter) == expected


# -- command line ---------------------------------------------------------------------------


def test_main_prints_only_the_summary_and_returns_it(tmp_path: Path) -> None:
    out = io.StringIO()
    argv = ["--tasks", "100", "--max-cps", str(MAX_CPS), "--out", str(tmp_path)]

    result = main([*argv, "--no-progress", "--visibility-timeout", "0.2"], out=out)

    assert out.getvalue() == result.render() + "\n"
    assert result.ok


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "loadtest.simulate", "--strategy", "sliding"),
            *("--tasks", "100", "--visibility-timeout", "0.2", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert "busiest 1 s" in completed.stdout
    assert (tmp_path / "calls-sliding.png").exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--tasks", "0"], "tasks"),
        (["--batch-size", "11"], "batch_size"),
        (["--invalid-rate", "1.5"], "invalid_rate"),
        (["--strategy", "leaky"], "strategy"),
    ],
)
def test_the_command_line_refuses_impossible_settings(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


# -- the synthetic campaign -----------------------------------------------------------------


def test_synthetic_tasks_are_distinct_with_one_percent_invalid_numbers() -> None:
    tasks = make_tasks(1000, seed=1, run_id="r")

    keys = {(t["campaignId"], t["contactId"], t["attempts"]) for t in tasks}
    assert len(keys) == len({t["messageId"] for t in tasks}) == 1000
    assert sum(1 for t in tasks if not E164.fullmatch(t["phoneNumber"])) == 10
    assert all(t["campaign"]["status"] == "active" for t in tasks)


def test_synthetic_tasks_follow_the_seed() -> None:
    now = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)

    first = make_tasks(50, seed=3, run_id="r", enriched_at=now)

    assert first == make_tasks(50, seed=3, run_id="r", enriched_at=now)
    assert first[0]["enrichedAt"] == "2024-01-15T10:30:00.000Z"


def test_with_lasting_calls_no_campaign_ever_has_more_in_progress_than_its_limit(
    tmp_path: Path,
) -> None:
    config = small_run(
        tmp_path, "paced", tasks=200, campaigns=2, call_seconds=0.5, max_concurrent_calls=10
    )
    summary = run_simulation(config)
    assert len(summary.campaign_peaks) == 2
    assert set(summary.campaign_peaks.values()) == {10}
    assert summary.campaign_chart is not None
    assert summary.campaign_chart.read_bytes().startswith(PNG_SIGNATURE)
    assert summary.accounted_for
    assert "calls in progress, peak per campaign (limit 10)" in summary.render()


def test_synthetic_tasks_are_dealt_to_the_campaigns_in_turn() -> None:
    tasks = make_tasks(6, seed=1, run_id="r", campaigns=3, config={"maxConcurrentCalls": 4})
    assert [t["campaignId"] for t in tasks[:3]] == [f"campaign-sim-r-{k}" for k in range(3)]
    assert all(t["campaign"]["id"] == t["campaignId"] for t in tasks)
    assert {t["campaign"]["config"]["maxConcurrentCalls"] for t in tasks} == {4}


# -- exact counting -------------------------------------------------------------------------


def test_the_busiest_window_may_start_anywhere_not_only_on_a_whole_second() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2]) == (4, 0.5)


def test_a_call_one_window_later_is_in_the_next_window() -> None:
    assert max_in_window([0.0, 1.0, 2.0]) == (1, 0.0)


def test_no_calls_make_an_empty_window() -> None:
    assert max_in_window([]) == (0, 0.0)


def test_calls_are_counted_per_hundred_milliseconds() -> None:
    assert per_bucket([0.0, 0.05, 0.1, 0.35, 0.99], 0.0, 0.1, 10) == [2, 1, 0, 1, 0, 0, 0, 0, 0, 1]


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=60))
def test_the_trailing_count_peaks_at_the_busiest_window(times: list[float]) -> None:
    _, values = trailing_series(times)

    assert max(values, default=0) == max_in_window(times)[0]


@pytest.mark.parametrize(
    "times",
    [
        pytest.param([n / 100 for n in range(500)], id="smooth"),
        pytest.param([second + n / 10_000 for second in range(5) for n in range(100)], id="bursts"),
    ],
)
def test_the_mean_rate_reads_the_pace_whether_smooth_or_bursty(times: list[float]) -> None:
    assert mean_rate(times) == pytest.approx(100, rel=0.02)


def test_a_call_one_hundred_milliseconds_later_is_in_the_next_tenth() -> None:
    assert max_in_window([0.0, 0.05, 0.0999, 0.1], 0.1) == (3, 0.0)


def test_the_busiest_tenth_may_straddle_two_aligned_tenths() -> None:
    times = [0.05, 0.08, 0.12, 0.149]

    assert per_bucket(times, 0.0, 0.1, 2) == [2, 2]
    assert max_in_window(times, 0.1) == (4, 0.05)


# 16 a second: binary fractions, so that "exactly one second apart" is exact in floats.
EVEN_PACE = [n / 16 for n in range(64)]


def test_calls_exactly_one_over_the_limit_apart_fill_every_second_to_the_limit() -> None:
    assert max_in_window(EVEN_PACE) == (16, 0.0)


def test_one_call_a_millisecond_early_puts_one_over_the_limit_in_a_second() -> None:
    early = [at - 0.001 if n == 32 else at for n, at in enumerate(EVEN_PACE)]

    assert max_in_window(early)[0] == 17
    assert max_in_window(early, 0.98)[0] == 16


def test_the_mean_trailing_count_of_an_even_pace_is_its_rate() -> None:
    assert mean_trailing(EVEN_PACE, 1.0, 3.0) == pytest.approx(16)


def test_the_mean_trailing_count_holds_a_burst_for_one_window_then_drops() -> None:
    burst = [2.0 + n / 1000 for n in range(10)]

    assert mean_trailing(burst, 2.0, 4.0) == pytest.approx(10 / 2)
    assert mean_trailing(burst, 1.5, 2.5) == pytest.approx(sum(0.5 - n / 1000 for n in range(10)))


def test_the_mean_trailing_count_needs_an_interval() -> None:
    with pytest.raises(ValueError, match="after"):
        mean_trailing(EVEN_PACE, 2.0, 2.0)


@pytest.mark.parametrize(
    ("demand_fell", "expected"),
    [
        (None, (1.0, 63 / 16)),
        (3.0, (1.0, 3.0)),
        (10.0, (1.0, 63 / 16)),
        (0.5, None),
    ],
)
def test_the_steady_part_runs_from_a_full_window_until_demand_fell(
    demand_fell: float | None, expected: tuple[float, float] | None
) -> None:
    assert steady_part(EVEN_PACE, demand_fell) == expected


def test_a_run_without_calls_has_no_steady_part() -> None:
    assert steady_part([], None) is None


@pytest.mark.parametrize(("max_cps", "target"), [(1, 3), (10, 3), (20, 4), (200, 22), (1000, 102)])
def test_the_tenth_target_is_a_tenth_of_the_limit_rounded_up_plus_two(
    max_cps: int, target: int
) -> None:
    assert tenth_target(max_cps) == target


@pytest.mark.parametrize(
    ("figure", "verdict"),
    [
        (Figure("second", "busiest 1 s", 397, 200), "OVER by 197 (98.5%)"),
        (Figure("second", "busiest 1 s", 200, 200), "PASS"),
        (Figure("utilisation", "utilisation", 180, 190, at_least=True), "UNDER by 10 (5.3%)"),
        (Figure("utilisation", "utilisation", 199.5, 190, at_least=True), "PASS"),
        (Figure("counters", "counter", None, 200, missing=NO_COUNTERS), NO_COUNTERS),
    ],
)
def test_a_figure_passes_or_says_how_far_it_misses(figure: Figure, verdict: str) -> None:
    assert figure.verdict == verdict
    assert figure.ok == (verdict == "PASS" or figure.value is None)


# -- the limiter's counters -----------------------------------------------------------------


def test_the_counter_watch_reads_each_seconds_counter_and_those_reserved_ahead(
    raw_redis: redis.Redis, prefix: str
) -> None:
    watch = CounterWatch(raw_redis, prefix, ahead=2)
    watch.begin()
    now = int(raw_redis.time()[0])
    for second, count in ((now, 5), (now + 1, 7)):
        raw_redis.set(f"{prefix}:{second}", count, px=10_000)
    raw_redis.set(f"{prefix}:health", 99, px=10_000)

    watch.stop.set()
    watch.run()

    assert watch.counters == {now: 5, now + 1: 7}
    assert watch.highest() == 7
    assert watch.stalls == 0


def test_a_run_without_counters_has_no_highest_counter(raw_redis: redis.Redis, prefix: str) -> None:
    watch = CounterWatch(raw_redis, prefix, ahead=2)
    watch.begin()
    watch.stop.set()
    watch.run()

    assert watch.highest() is None


# -- the pipe --------------------------------------------------------------------------------


def test_the_pipe_notes_when_an_invocation_first_finds_nothing_to_take() -> None:
    messages = [Message({"n": n}, f"m{n}") for n in range(3)]
    pipe = Pipe(messages, max_receive_count=1, visibility_timeout=0.0, on_settled=lambda _: None)

    batch = pipe.take(10)
    assert batch is not None
    assert pipe.ran_dry_at is None
    pipe.settle(batch, {"successful": 3})

    assert pipe.take(10) is None
    assert pipe.ran_dry_at is not None


# -- demand and the default strategy ---------------------------------------------------------


def test_the_demo_runs_the_dialers_default_strategy() -> None:
    dialer_default = next(f.default for f in fields(Settings) if f.name == "strategy")

    assert dialer_default == DEFAULT_STRATEGY
    assert parse_args([]).strategy == dialer_default


@pytest.mark.parametrize(("max_cps", "tasks", "concurrency"), [(10, 150, 2), (200, 3000, 40)])
def test_tasks_and_invocations_scale_with_the_limit_to_twice_its_demand(
    max_cps: int, tasks: int, concurrency: int
) -> None:
    config = parse_args(["--max-cps", str(max_cps)])

    assert (config.tasks, config.concurrency) == (tasks, concurrency)
    assert config.concurrency * config.batch_size == 2 * max_cps
    assert (tasks_for(max_cps), concurrency_for(max_cps)) == (tasks, concurrency)


def test_the_command_line_overrides_the_scaled_tasks_and_invocations() -> None:
    config = parse_args(["--max-cps", "10", "--tasks", "7", "--concurrency", "3"])

    assert (config.tasks, config.concurrency) == (7, 3)


# -- the pace a carrier sees, per strategy ----------------------------------------------------

PACING_MAX_CPS = 20
PACING_SECONDS = 6


@dataclass(frozen=True)
class Pacing:
    """What a strategy's short run must show: the figures (by key) reported PASS, those
    reported OVER, the most calls its strict second at the worker may hold, and its highest
    cps:<ts> counter."""

    strategy: StrategyName
    passes: frozenset[str]
    over: frozenset[str] = frozenset()
    strict_second: int = PACING_MAX_CPS
    counter: int = PACING_MAX_CPS


PACING = [
    # The dialer's default: spaced 1/limit apart plus a headroom for the dial path's jitter,
    # counted in the seed's cps:<ts> counters. Every figure, the strict second included.
    Pacing(
        "paced",
        passes=frozenset({"second", "second_less_jitter", "tenth", "utilisation", "counters"}),
    ),
    # The smooth stand-in for the dialer's default: permits exactly 1/limit apart, with no
    # room for jitter. A call that reaches the worker a little later than the one a limit's
    # worth after it puts limit + 1 calls in a strict second, and one more for each further
    # spacing of lateness; under CI load this machine's dial path ran over 20 ms late, so the
    # strict second and the one less 20 ms measure the machine here, not the strategy (the
    # demo shows them). What holds regardless: no bunching within 100 ms, the pace kept, and
    # a strict second within what half a second of lateness could add. Its cps:<ts> counters
    # are the dialer's tally of calls sent (for CurrentCPS), per second of the sending clock,
    # which the same lateness moves.
    Pacing(
        "token",
        passes=frozenset({"tenth", "utilisation"}),
        strict_second=PACING_MAX_CPS * 3 // 2,
        counter=PACING_MAX_CPS * 3 // 2,
    ),
    # Unpaced: each second's calls leave together. Redis sees the limit kept; a carrier
    # counting 100-ms intervals sees the burst. A second across a window boundary may hold
    # two windows' worth.
    Pacing(
        "fixed",
        passes=frozenset({"counters"}),
        over=frozenset({"tenth"}),
        strict_second=2 * PACING_MAX_CPS,
    ),
]


@pytest.fixture(scope="module", params=PACING, ids=lambda case: case.strategy)
def paced_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Pacing, Summary]:
    """A few seconds at a low limit, with the default demand and the stub in its own process."""
    case: Pacing = request.param
    config = parse_args(
        [
            *("--strategy", case.strategy, "--max-cps", str(PACING_MAX_CPS)),
            *("--tasks", str(PACING_SECONDS * PACING_MAX_CPS), "--visibility-timeout", "0.2"),
            *("--out", str(tmp_path_factory.mktemp(f"pacing-{case.strategy}")), "--no-progress"),
        ]
    )
    return case, run_simulation(config)


def test_each_pacing_figure_gets_the_verdict_the_strategy_earns(
    paced_run: tuple[Pacing, Summary],
) -> None:
    case, summary = paced_run
    verdicts = {figure.key: figure.verdict for figure in summary.pacing}

    assert {key: verdicts[key] for key in case.passes} == dict.fromkeys(case.passes, "PASS")
    assert all(verdicts[key].startswith("OVER by") for key in case.over), verdicts


def test_the_strict_second_at_the_worker_holds_what_the_strategy_bounds(
    paced_run: tuple[Pacing, Summary],
) -> None:
    case, summary = paced_run
    assert summary.pace is not None

    assert summary.pace.max_in_any_second <= case.strict_second


def test_the_counters_are_read_where_the_strategy_keeps_them(
    paced_run: tuple[Pacing, Summary],
) -> None:
    case, summary = paced_run
    counters = next(figure for figure in summary.pacing if figure.key == "counters")

    # Every strategy the dialer runs keeps them: the windows count in them, and under the
    # token bucket the dialer tallies its calls there for CurrentCPS.
    assert counters.value is not None
    assert 0 < counters.value <= case.counter
    assert summary.counter_stalls == 0


def test_the_demand_is_twice_the_limit_and_the_stub_kept_the_record(
    paced_run: tuple[Pacing, Summary],
) -> None:
    _, summary = paced_run

    assert summary.concurrency * summary.batch_size == 2 * PACING_MAX_CPS
    assert summary.pace is not None
    assert summary.pace.worker_calls == summary.settled
    assert summary.ok


# -- two strategies side by side --------------------------------------------------------------


def test_compare_draws_the_two_runs_side_by_side(tmp_path: Path) -> None:
    image = tmp_path / "pacing.png"
    out = io.StringIO()

    summaries = compare_module.main(
        [
            *("--strategy", "token", "--image", str(image), "--max-cps", str(PACING_MAX_CPS)),
            *("--tasks", "40", "--visibility-timeout", "0.2", "--out", str(tmp_path)),
            "--no-progress",
        ],
        out=out,
    )

    assert [summary.strategy for summary in summaries] == ["token", "fixed"]
    height, width, _ = imread(image).shape
    assert (width, height) == (1600, 700)
    assert f"written: {image}" in out.getvalue()
