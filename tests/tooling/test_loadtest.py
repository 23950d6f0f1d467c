"""The load test, short: Locust with worker processes against a real Redis and the worker stub,
so that `make loadtest` cannot rot; its checks, which must be able to fail; and the verdicts the
load test and the benchmark both print."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis

from cps_limiter import FixedWindow, Limiter
from loadtest.bench._anatomy import anatomy
from loadtest.bench._measure import Session
from loadtest.bench._server import Recorder
from loadtest.reports import Verdict, verdict_table
from loadtest.run import burst_limit, checks_for, scenario_result, utilisation
from loadtest.run.__main__ import dialer_users, parse_args
from loadtest.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 50


DIALER_CHECKS = {
    "calls reached the worker",
    "most calls in any interval of 1 s at the worker (strict)",
    "most calls in any interval of 100 ms at the worker (strict)",
    "utilisation of MAX_CPS over the steady part, at twice the demand",
    "Redis: highest window counter (cps:<ts>)",
}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_short_load_test_checks_every_scenario_and_writes_its_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.run",
            "--duration",
            "5",
            "--processes",
            "2",
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    report = json.loads((tmp_path / "loadtest.json").read_text())
    checks = report["checks"]
    # The dialer's strict figures hold each arrival at the stub to the limit with no allowance:
    # on a shared machine, a stall of the stub's or Locust's processes longer than the paced
    # window's headroom (30 ms a second) shows in them, as it would at a carrier. This short
    # run checks that they are measured and that the exit code carries their verdict;
    # `make loadtest` reports it, and the tests above show that they fail what they must.
    strict = [check for check in checks if "(strict)" in check["check"]]
    failed = [check for check in checks if not check["pass"] and check not in strict]
    assert (failed, done.returncode) == ([], 0 if all(c["pass"] for c in strict) else 1), (
        done.stdout + done.stderr
    )
    assert {check["check"] for check in checks if check["subject"] == "dialer"} == DIALER_CHECKS
    written = {path.name for path in tmp_path.iterdir()}
    assert {"locust_stats.csv", "locust.html", "loadtest.png", "loadtest.md"} <= written


def _second_of_bursts(starts: list[float], size: int) -> list[float]:
    """``size`` calls 1 ms apart from each start."""
    return [start + index * 0.001 for start in starts for index in range(size)]


def _even_pace(rate: float, seconds: float, start: float = 10.0) -> list[float]:
    """Calls exactly ``1 / rate`` apart for ``seconds``."""
    return [start + index / rate for index in range(round(rate * seconds))]


def _failed(scenario: str, times: list[float], warmup: float = 0.0) -> list[str]:
    result = scenario_result(scenario, times, LIMIT, jitter=0.05, warmup=warmup)
    return [check.text for check in checks_for(result, LIMIT, 0.05) if not check.passed]


def test_a_fixed_window_burst_across_a_boundary_fails_the_sliding_check() -> None:
    # The limit at the end of one window and again at the start of the next: allowed by a
    # fixed window, twice the limit within one second for a carrier.
    failed = _failed("sliding", _second_of_bursts([1.9, 2.0], LIMIT))
    assert any("ms at the worker" in text for text in failed)


def test_the_same_burst_passes_the_fixed_window_check_per_aligned_second() -> None:
    times = _second_of_bursts([1.9, 2.0], LIMIT)
    result = scenario_result("fixed", times, LIMIT, jitter=0.05)
    windowed = [c for c in checks_for(result, LIMIT, 0.05) if "aligned second" in c.text]
    assert [check.passed for check in windowed] == [True]


def test_the_dialers_checks_see_a_fixed_window_burst_across_a_boundary() -> None:
    failed = _failed("dialer", _second_of_bursts([1.9, 2.0], LIMIT))
    assert {
        "most calls in any interval of 1 s at the worker (strict)",
        "most calls in any interval of 100 ms at the worker (strict)",
    } <= set(failed)


def test_an_even_pace_with_the_paced_windows_headroom_passes_every_dialer_check() -> None:
    assert _failed("dialer", _even_pace(LIMIT / 1.03, 10)) == []


def test_the_dialers_second_allows_no_jitter_a_stall_longer_than_the_headroom_fails() -> None:
    # The headroom puts LIMIT + 1 calls 1.03 s apart. A sender that stalls for 45 ms sends the
    # calls due meanwhile when it wakes: with the one due LIMIT slots later, LIMIT + 1 in 1 s.
    times = _even_pace(LIMIT / 1.03, 10)
    stall_start = times[3 * LIMIT]
    stall_end = stall_start + 0.045
    stalled = [stall_end if stall_start <= at < stall_end else at for at in times]
    result = scenario_result("dialer", stalled, LIMIT, jitter=0.05)
    assert result.max_any_second == LIMIT + 1
    assert "most calls in any interval of 1 s at the worker (strict)" in _failed("dialer", stalled)


def test_the_dialers_checks_leave_out_no_warm_up() -> None:
    times = _second_of_bursts([0.5], LIMIT) + _even_pace(LIMIT / 1.03, 10, start=0.6)
    assert "most calls in any interval of 1 s at the worker (strict)" in _failed(
        "dialer", sorted(times), warmup=2.0
    )


def test_a_dialer_below_95_percent_of_the_limit_fails_its_utilisation() -> None:
    failed = _failed("dialer", _even_pace(LIMIT * 0.9, 10))
    assert failed == ["utilisation of MAX_CPS over the steady part, at twice the demand"]


@pytest.mark.parametrize(
    ("limit", "most"), [(10, 3), (15, 4), (50, 7), (100, 12), (200, 22), (1000, 102)]
)
def test_a_100_ms_interval_may_hold_a_tenth_of_the_limit_rounded_up_and_two_more(
    limit: int, most: int
) -> None:
    assert burst_limit(limit) == most


def test_the_hop_to_the_stub_is_each_calls_arrival_less_its_send_stamp() -> None:
    sent = [float(second) for second in range(100)]
    arrived = [at + (0.002 if index < 98 else 0.5) for index, at in enumerate(sent)]
    result = scenario_result("dialer", arrived, LIMIT, jitter=0.05, sent=sent)
    assert result.hop_ms == pytest.approx({"p50": 2.0, "p99": 500.0, "max": 500.0})


def test_the_command_line_takes_several_max_cps_and_the_dialers_strategy() -> None:
    args = parse_args(["--max-cps", "10", "100", "--strategy", "fixed", "paced"])
    assert (args.max_cps, args.strategy) == ([10, 100], ["fixed", "paced"])


def test_the_dialers_users_grow_with_max_cps() -> None:
    args = parse_args([])
    assert [dialer_users(args, limit) for limit in (10, 100, 1000)] == [4, 8, 80]


@pytest.mark.parametrize(
    ("per_second", "expected"),
    [
        ({10: 7, 11: 50, 12: 50, 13: 3}, 1.0),
        ({10: 50, 11: 25, 12: 50}, 0.5),
        ({10: 50, 11: 50}, 0.0),
    ],
)
def test_utilisation_counts_only_the_whole_seconds_between_the_first_and_the_last(
    per_second: dict[int, int], expected: float
) -> None:
    assert utilisation(Counter(per_second), LIMIT) == expected


def test_the_limiter_scenarios_checks_leave_out_the_warm_up_and_the_strict_figure_does_not() -> (
    None
):
    # A burst while users start, then a steady pace of the limit per second.
    times = _second_of_bursts([0.5, 0.6], LIMIT) + [3 + i * 1.001 / LIMIT for i in range(LIMIT * 3)]
    result = scenario_result("sliding", sorted(times), LIMIT, jitter=0.05, warmup=2.0)
    assert (result.max_aligned_second, result.max_any_second) == (LIMIT, 2 * LIMIT)


@pytest.mark.parametrize(
    ("at_least", "measured", "result"),
    [
        (True, 7.0, "PASS"),
        (True, 6.9, "MISS"),
        (False, 1.5, "PASS"),
        (False, 1.6, "MISS"),
    ],
)
def test_a_verdict_passes_on_its_side_of_the_threshold_and_at_the_threshold_itself(
    at_least: bool, measured: float, result: str
) -> None:
    threshold = 7.0 if at_least else 1.5
    verdict = Verdict("batch", "ratio", measured, threshold, at_least=at_least, unit="x")
    assert verdict.result == result


@pytest.mark.parametrize(
    ("unit", "measured", "threshold", "row"),
    [
        ("", 3001, 50, "| 3001 | <= 50 |"),
        ("x", 0.823, 1.0, "| 0.82x | <= 1.00x |"),
        ("%", 0.289, 0.2, "| 28.9% | <= 20.0% |"),
        ("MB", 41.14, 80.0, "| 41.1 MB | <= 80.0 MB |"),
    ],
)
def test_a_verdicts_row_shows_the_figure_and_its_target_in_the_figures_unit(
    unit: str, measured: float, threshold: float, row: str
) -> None:
    verdict = Verdict("subject", "check", measured, threshold, unit=unit)
    assert verdict_table([verdict], "scenario")[-1] == f"| subject | check {row} {verdict.result} |"


def test_a_verdict_refuses_a_unit_it_cannot_show() -> None:
    with pytest.raises(ValueError, match="unit"):
        Verdict("subject", "check", 1.0, 1.0, unit="ops/s")


def test_the_bench_finds_a_positive_redis_time_per_decision_sent_as_one_evalsha() -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        with Limiter.from_url(server.url, FixedWindow(10**6), prefix="cpu") as limiter:
            recorder = Recorder(client, seconds=0.05)
            sample = recorder.sampler("fixed", limiter.acquire)
            cpu_us = sample()
        taken = recorder.samples["fixed"][0]
        client.close()
    finally:
        server.cleanup()
    assert cpu_us > 0
    assert taken.sent == {"evalsha"}
    assert taken.commands["evalsha"][0] == 1.0
    assert taken.commandstats_us > 0


def test_the_bench_times_each_step_of_a_script_against_limits_script_on_its_server() -> None:
    server = RedisServer().start()
    try:
        with contextlib.ExitStack() as stack:
            session = Session(server.url, 1, 0.01, 1, stack)
            anatomy(session)
    finally:
        server.cleanup()
    steps = session.comparisons["anatomy"]
    assert len(steps.contenders) == 8  # the six steps, and the two scripts of main beside ours
    assert all(steps.median(c.name) > 0 for c in steps.contenders)
    assert steps.ratio(steps.baseline) == 1.0
