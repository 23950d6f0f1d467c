"""The simulation's carrier: its command line reaches the stub, the stub's refusals reach the
handler's limiter, and the figures are measured over the worker's record."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cps_limiter import AdaptivePolicy, FixedWindow, Limiter
from loadtest.simulate.carrier import carrier_figures, refusal_relay, stub_arguments
from loadtest.simulate.config import parse_args
from loadtest.worker_stub import Call, Outcome, StubHealth
from loadtest.worker_stub.carrier import CarrierLimit
from loadtest.worker_stub.cli import carrier_of
from loadtest.worker_stub.cli import parse_args as stub_parse_args


def test_the_carrier_of_the_command_line_goes_to_the_stub_as_it_is() -> None:
    config = parse_args(
        ["--carrier-limit", "70", "--carrier-window", "5", "--carrier-limit-after", "15:100"]
    )
    assert config.carrier == CarrierLimit(70, 5.0, ((15.0, 100),))
    stub = carrier_of(stub_parse_args(stub_arguments(config.carrier)))
    assert stub is not None
    assert stub.limit == config.carrier


def test_without_a_carrier_the_stub_gets_no_carrier_arguments() -> None:
    assert parse_args([]).carrier is None
    assert stub_arguments(None) == []


def _health(refused: int) -> StubHealth:
    return StubHealth(35.0, 0.6, 0, 0.0, refused=refused)


def test_the_relay_reports_only_the_new_refusals() -> None:
    limiter = Limiter.from_url(
        f"memory://{uuid.uuid4().hex}", FixedWindow(100), adaptive=AdaptivePolicy()
    )
    relay = refusal_relay(limiter)
    for refused in (0, 3, 3, 5):
        relay(_health(refused))
    assert limiter.aimd().refused == 5


def _calls(per_second: int, seconds: int, refused_every: int) -> list[Call]:
    count = per_second * seconds
    return [
        Call(n / per_second, float(n), Outcome.OK, 0.0, None, refused=n % refused_every == 0)
        for n in range(1, count + 1)
    ]


def test_the_figures_count_refusals_and_use_after_the_settling_time(tmp_path: Path) -> None:
    calls = _calls(per_second=70, seconds=20, refused_every=100)
    figures = carrier_figures(CarrierLimit(70), calls, [(0.0, 70.0)], 0.0, tmp_path / "c.png")
    assert figures is not None
    assert figures.settled_refused == pytest.approx(0.01, abs=0.002)
    assert figures.settled_used == pytest.approx(0.99, abs=0.01)
    assert figures.chart is not None
    assert figures.chart.exists()


def test_recovery_is_when_a_second_holds_the_share_of_the_new_limit() -> None:
    slow = [Call(n / 70, float(n), Outcome.OK, 0.0, None) for n in range(70 * 20)]
    fast = [Call(20 + 5 + n / 100, 0.0, Outcome.OK, 0.0, None) for n in range(300)]
    carrier = CarrierLimit(70, changes=((20.0, 100),))
    figures = carrier_figures(carrier, [*slow, *fast], [], 0.0, None)
    assert figures is not None
    assert figures.recovered_after == pytest.approx(5.94, abs=0.02)
