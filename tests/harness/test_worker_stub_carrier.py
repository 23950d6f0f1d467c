"""The carrier behind the stub: a limit over a rolling window, the excess refused after `/dial`
answered, and each refusal reported with the worker's one-line HINCRBY."""

from __future__ import annotations

import httpx
import pytest
import redis

from loadtest.worker_stub import WorkerStub
from loadtest.worker_stub.carrier import Carrier, CarrierLimit, Refusals, parse_change
from loadtest.worker_stub.cli import carrier_of, parse_args
from tests.support.stub import CLIENT_TIMEOUT_SECONDS, dial_body


def _offer_evenly(carrier: Carrier, count: int, start: float, span: float) -> list[bool]:
    return [carrier.offer(start + span * n / count) for n in range(count)]


@pytest.mark.parametrize(("limit", "window"), [(70, 1.0), (10, 5.0)])
def test_the_carrier_refuses_what_is_over_its_window(limit: int, window: float) -> None:
    carrier = Carrier(CarrierLimit(limit, window))
    taken = _offer_evenly(carrier, limit * int(window) + 5, 0.0, window / 2)
    assert taken.count(True) == limit * window
    assert carrier.refused == 5


@pytest.mark.parametrize("window", [1.0, 5.0])
def test_the_window_rolls(window: float) -> None:
    carrier = Carrier(CarrierLimit(10, window))
    _offer_evenly(carrier, int(10 * window), 0.0, window / 2)
    assert not carrier.offer(window - 0.01)
    assert carrier.offer(window + 0.01)  # the first call left the window


def test_a_refused_call_does_not_count_against_the_window() -> None:
    carrier = Carrier(CarrierLimit(2))
    assert [carrier.offer(at) for at in (0.0, 0.1, 0.2, 0.3)] == [True, True, False, False]
    assert carrier.offer(1.05)


def test_the_carriers_limit_changes_during_the_run() -> None:
    carrier = Carrier(CarrierLimit(1, changes=((10.0, 3),)))
    assert _offer_evenly(carrier, 3, 0.0, 0.5) == [True, False, False]
    assert _offer_evenly(carrier, 3, 10.0, 0.5) == [True, True, True]


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 10, "window": 0.0}, {"limit": 10, "changes": ((5.0, 1), (1.0, 2))}],
)
def test_an_impossible_carrier_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="carrier"):
        CarrierLimit(**kwargs)  # type: ignore[arg-type]


def test_the_command_line_builds_the_carrier() -> None:
    args = parse_args(["--carrier-limit", "70", "--carrier-limit-after", "15:100"])
    carrier = carrier_of(args)
    assert carrier is not None
    assert carrier.limit == CarrierLimit(70, 1.0, ((15.0, 100),))


def test_a_limit_change_needs_a_carrier_limit() -> None:
    with pytest.raises(ValueError, match="needs --carrier-limit"):
        carrier_of(parse_args(["--carrier-limit-after", "15:100"]))


def test_a_limit_change_without_a_colon_is_refused() -> None:
    with pytest.raises(ValueError, match="SECONDS:LIMIT"):
        parse_change("15")


def test_the_stub_answers_a_refused_call_as_placed_and_records_the_refusal() -> None:
    with (
        WorkerStub(carrier=Carrier(CarrierLimit(2))) as stub,
        httpx.Client(base_url=stub.url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        answers = [client.post("/dial", json=dial_body(call_id=f"c{n}")) for n in range(3)]
        assert [answer.json()["success"] for answer in answers] == [True, True, True]
        assert [call.refused for call in stub.calls] == [False, False, True]
        assert stub.health().refused == 1


def test_each_refusal_is_reported_with_the_workers_hincrby(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    refusals = Refusals(redis.Redis.from_url(redis_url), prefix, owns_client=True)
    for _ in range(5):
        refusals.refused()
    refusals.close()  # reports what is pending before it returns
    assert raw_redis.hget(f"{prefix}:adaptive", "refused") == "5"
