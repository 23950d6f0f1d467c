"""The limiter through real Redis faults, injected while a load runs.

Each fault (killed, stalled, restarted empty, out of memory, at maxclients, blackholed behind a
proxy) runs once per variant (sync on each strategy, async, fail closed); the tests below each
check one promise of the contract on that run.
"""

from __future__ import annotations

import itertools

import pytest

from cps_limiter import BackendUnavailable, Limiter
from tests.support.fault_run import FaultRun, run_fault
from tests.support.faults import DECISION_BOUND, FAULTS, RECOVERY_BOUND, start_fault
from tests.support.load import LIMIT, Sample, burst, strategy
from tests.support.measure import Measurement, Report
from tests.support.telemetry import counted_decisions

pytestmark = pytest.mark.usefixtures("no_limiter_spans")

VARIANTS: dict[str, tuple[str, str, str]] = {
    "sync-fixed": ("sync", "fixed", "open"),
    "sync-sliding": ("sync", "sliding", "open"),
    "sync-token": ("sync", "token", "open"),
    "async-fixed": ("async", "fixed", "open"),
    "sync-fixed-closed": ("sync", "fixed", "closed"),
}
STAYS_EXACT = {("out_of_memory", "sliding")}
"""Under OOM the sliding window's script starts with ZREMRANGEBYSCORE, a write that Redis
admits; a script that has written may go on writing, so it keeps deciding exactly."""


@pytest.fixture(
    scope="module",
    params=[(fault, variant) for fault in sorted(FAULTS) for variant in VARIANTS],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def run(request: pytest.FixtureRequest, fault_report: Report) -> FaultRun:
    """One fault injected under load, held, healed, and measured (once for all the tests)."""
    fault_name, variant = request.param
    kind, strategy_name, fail_mode = VARIANTS[variant]
    fault = start_fault(fault_name)
    try:
        with counted_decisions(strategy_name) as fail_open_count:
            result = run_fault(
                fault,
                strategy_name=strategy_name,
                kind=kind,
                fail_mode=fail_mode,
                stays_exact=(fault_name, strategy_name) in STAYS_EXACT,
                fail_open_count=fail_open_count,
            )
    finally:
        fault.close()
    fault_report.add(result.measurement())
    return result


def outcome(sample: Sample) -> str:
    if sample.error is not None:
        return type(sample.error).__name__
    assert sample.decision is not None
    return "fail_open" if sample.decision.fail_open else "exact"


def expected_outcomes(run: FaultRun) -> tuple[set[str], set[str]]:
    """What decisions during the fault must include, and what they may include."""
    if run.stays_exact:
        return {"exact"}, {"exact"}
    broken = "BackendUnavailable" if run.variant.endswith("closed") else "fail_open"
    # A restart is over in milliseconds: decisions may or may not meet it.
    required = {broken} if run.fault != "restarted_empty" else set()
    return required, {"exact", broken}


@pytest.mark.slow
def test_no_exception_but_backend_unavailable_when_closed_escapes(run: FaultRun) -> None:
    allowed = (BackendUnavailable,) if run.variant.endswith("closed") else ()
    assert [e for e in run.errors() if not isinstance(e, allowed)] == []


@pytest.mark.slow
def test_every_decision_takes_at_most_250_ms(run: FaultRun) -> None:
    assert run.worst() <= DECISION_BOUND


@pytest.mark.slow
def test_while_redis_is_broken_decisions_fail_open_or_raise_as_configured(run: FaultRun) -> None:
    required, allowed = expected_outcomes(run)
    seen = {outcome(sample) for sample in run.during()}
    assert required <= seen <= allowed


@pytest.mark.slow
def test_a_fail_open_decision_grants_what_was_asked_and_says_so(run: FaultRun) -> None:
    opened = [s.decision for s in run.samples if s.decision is not None and s.decision.fail_open]
    assert all(d.allowed and d.granted == 1 and d.limit == LIMIT for d in opened)


@pytest.mark.slow
def test_failing_open_is_logged_as_a_warning_on_the_cps_limiter_logger(run: FaultRun) -> None:
    failed_open = any(outcome(s) == "fail_open" for s in run.samples)
    assert bool(run.warnings) == failed_open
    assert all("failing open" in record.getMessage() for record in run.warnings)


@pytest.mark.slow
def test_each_fail_open_decision_is_counted_in_the_decisions_metric(run: FaultRun) -> None:
    assert run.fail_open_counted == sum(1 for s in run.samples if outcome(s) == "fail_open")


@pytest.mark.slow
def test_decisions_are_exact_again_within_a_second_of_redis_returning(run: FaultRun) -> None:
    assert run.recovery <= RECOVERY_BOUND


@pytest.mark.slow
def test_after_the_fault_threads_hammering_one_key_get_exactly_the_limit(run: FaultRun) -> None:
    assert not any(d.fail_open for d in run.hammered)
    assert sum(d.granted for d in run.hammered) == LIMIT


@pytest.mark.slow
def test_counts_survive_the_fault_unless_redis_lost_its_data(run: FaultRun) -> None:
    assert not run.before.fail_open
    assert run.before.remaining == (LIMIT if run.loses_data else 0)


CROWD = 96
"""More callers than the client's 64 connections: a third of them wait for one first."""


@pytest.mark.slow
@pytest.mark.parametrize("fault_name", ["stalled", "blackholed"])
def test_a_crowd_of_callers_meeting_a_silent_redis_each_wait_at_most_250_ms(
    fault_name: str, fault_report: Report
) -> None:
    fault = start_fault(fault_name)
    limiter = Limiter.from_url(fault.url, strategy("fixed", LIMIT), prefix="crowd")
    scopes = itertools.count()
    try:
        burst(lambda: limiter.acquire(f"warm-{next(scopes)}"), CROWD)  # fills the pool
        fault.inject()
        timed = burst(lambda: limiter.acquire(f"crowd-{next(scopes)}"), CROWD)
        fault.heal()
    finally:
        limiter.close()
        fault.close()
    worst = max(seconds for seconds, _ in timed)
    fault_report.add(
        Measurement("limiter", fault_name, f"sync-fixed-open-crowd-{CROWD}",
                    round(worst * 1000, 1), None, len(timed),
                    sum(1 for _, d in timed if d.fail_open))
    )  # fmt: skip
    assert all(decision.fail_open for _, decision in timed)
    assert worst <= DECISION_BOUND
