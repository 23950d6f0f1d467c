"""The stand-in Node.js worker: answers, recorded commands, misbehaviour on demand, control."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from loadtest.servers import free_port, wait_for_port
from loadtest.worker_stub import Behaviour, Outcome, RemoteStub, WorkerStub
from loadtest.worker_stub.behaviour import SETTINGS
from loadtest.worker_stub.cli import behaviour_of, parse_args
from tests.support.stub import CLIENT_TIMEOUT_SECONDS, dial_body

PHONE = "+972501234567"
OTHER_PHONE = "+972509876543"


def wait_for_calls(stub: WorkerStub, count: int, timeout: float = 5.0) -> None:
    """Block until the stub has recorded `count` dials: the request is surely being handled."""
    deadline = time.monotonic() + timeout
    while len(stub.calls) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stub recorded {len(stub.calls)} of {count} dials")
        time.sleep(0.005)


def test_a_dial_is_answered_as_the_seed_shows(client: httpx.Client) -> None:
    response = client.post("/dial", json=dial_body(call_id="call-x-1"))

    assert response.status_code == 200
    assert response.json() == {"success": True, "callId": "call-x-1", "status": "dialing"}


def test_each_dial_is_recorded_with_its_body_and_arrival_time(
    stub: WorkerStub, client: httpx.Client
) -> None:
    before = time.time()
    client.post("/dial", json=dial_body())
    after = time.time()

    [call] = stub.calls
    assert call.body == dial_body()
    assert before <= call.at <= after
    assert call.outcome is Outcome.OK
    assert call.phone_number == PHONE


def test_dials_from_many_threads_are_all_recorded(stub: WorkerStub, client: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(lambda n: client.post("/dial", json=dial_body(call_id=f"c-{n}")), range(200))
        )

    assert all(answer.status_code == 200 for answer in answers)
    assert sorted(call.call_id or "" for call in stub.calls) == sorted(f"c-{n}" for n in range(200))


def _fails(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.json()["success"] is False
    assert response.json()["error"] == "Asterisk originate failed"


def _status(code: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert response.status_code == code
        assert response.json()["success"] is False

    return check


def _garbage(response: httpx.Response) -> None:
    assert response.status_code == 200
    with pytest.raises(ValueError):  # not even UTF-8
        response.json()


def _huge(response: httpx.Response) -> None:
    assert len(response.content) == 300_000
    assert response.json()["success"] is True


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        pytest.param({"fail": 1.0}, _fails, id="fail"),
        pytest.param({"http_429": 1.0}, _status(429), id="429"),
        pytest.param({"http_503": 1.0}, _status(503), id="503"),
        pytest.param({"http_500": 1.0}, _status(500), id="500"),
        pytest.param({"garbage": 1.0}, _garbage, id="garbage"),
        pytest.param({"huge": 1.0, "huge_bytes": 300_000}, _huge, id="huge"),
    ],
)
def test_a_fault_set_for_every_request_shapes_the_answer(
    stub: WorkerStub,
    client: httpx.Client,
    changes: dict[str, Any],
    check: Callable[[httpx.Response], None],
) -> None:
    stub.set_behaviour(**changes)

    check(client.post("/dial", json=dial_body()))


@pytest.mark.parametrize(
    "changes",
    [pytest.param({"http_429": 1.0}, id="429"), pytest.param({"http_503": 1.0}, id="503")],
)
def test_overload_answers_say_when_to_retry(
    stub: WorkerStub, client: httpx.Client, changes: dict[str, Any]
) -> None:
    stub.set_behaviour(**changes)

    assert client.post("/dial", json=dial_body()).headers["Retry-After"] == "1"


def test_a_huge_body_too_small_for_json_is_cut_to_the_size_asked(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(huge=1.0, huge_bytes=10)

    assert len(client.post("/dial", json=dial_body()).content) == 10


def test_a_dropped_connection_gives_no_answer(stub: WorkerStub, client: httpx.Client) -> None:
    stub.set_behaviour(close=1.0)

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/dial", json=dial_body())
    assert [call.outcome for call in stub.calls] == [Outcome.CLOSE]


def test_a_hanging_dial_outlasts_the_client_timeout(stub: WorkerStub, client: httpx.Client) -> None:
    stub.set_behaviour(timeout=1.0)

    with pytest.raises(httpx.ReadTimeout):
        client.post("/dial", json=dial_body(), timeout=0.2)


def test_a_hanging_dial_ends_with_a_closed_connection_after_hang_seconds(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(timeout=1.0, hang_seconds=0.3)
    started = time.monotonic()

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/dial", json=dial_body())
    assert 0.3 <= time.monotonic() - started < CLIENT_TIMEOUT_SECONDS


def test_stopping_the_stub_cuts_a_hanging_dial_short() -> None:
    stub = WorkerStub(behaviour=Behaviour(timeout=1.0)).start()
    errors: list[BaseException] = []

    def dial() -> None:
        try:
            httpx.post(f"{stub.url}/dial", json=dial_body(), timeout=CLIENT_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=dial)
    thread.start()
    wait_for_calls(stub, 1)
    started = time.monotonic()
    stub.stop()
    thread.join()

    assert time.monotonic() - started < 1.0
    assert [type(error) for error in errors] == [httpx.RemoteProtocolError]


def test_a_slow_worker_answers_after_its_delay(stub: WorkerStub, client: httpx.Client) -> None:
    stub.set_behaviour(delay_ms=200)
    started = time.monotonic()

    response = client.post("/dial", json=dial_body())

    assert time.monotonic() - started >= 0.2
    assert response.json()["success"] is True


def test_a_behaviour_for_one_number_leaves_the_others_alone(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(phone=PHONE, fail=1.0)

    assert client.post("/dial", json=dial_body(PHONE)).json()["success"] is False
    assert client.post("/dial", json=dial_body(OTHER_PHONE)).json()["success"] is True


def test_a_fault_rate_hits_that_fraction_of_requests(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(fail=0.25)

    answers = [client.post("/dial", json=dial_body()).json()["success"] for _ in range(200)]

    assert abs(answers.count(False) - 50) <= 2


def test_fault_rates_add_up_and_leave_the_rest_answered_normally() -> None:
    behaviour = Behaviour(fail=0.1, http_503=0.2, close=0.05)

    outcomes = [behaviour.plan(n)[1] for n in range(1, 1001)]

    assert abs(outcomes.count(Outcome.FAIL) - 100) <= 3
    assert abs(outcomes.count(Outcome.HTTP_503) - 200) <= 3
    assert abs(outcomes.count(Outcome.CLOSE) - 50) <= 3
    assert abs(outcomes.count(Outcome.OK) - 650) <= 3


def test_a_delay_rate_slows_that_fraction_of_requests() -> None:
    behaviour = Behaviour(delay_ms=100, delay_rate=0.3)

    delays = [behaviour.plan(n)[0] for n in range(1, 1001)]

    assert abs(delays.count(0.1) - 300) <= 3
    assert set(delays) == {0.0, 0.1}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"fail": 1.5}, "fail"),
        ({"timeout": -0.1}, "timeout"),
        ({"fail": 0.6, "http_503": 0.6}, "add up to 1.2"),
        ({"delay_ms": -1.0}, "delay_ms"),
        ({"delay_rate": 2.0}, "delay_rate"),
        ({"hang_seconds": 0.0}, "hang_seconds"),
        ({"huge_bytes": 0}, "huge_bytes"),
    ],
    ids=str,
)
def test_an_impossible_behaviour_is_refused_naming_the_field(
    changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        Behaviour(**changes)


EVERY_FIELD_CHANGED = Behaviour(
    delay_ms=5.0,
    delay_rate=0.5,
    fail=0.1,
    timeout=0.1,
    http_429=0.1,
    http_503=0.1,
    http_500=0.1,
    garbage=0.1,
    huge=0.1,
    close=0.1,
    hang_seconds=2.0,
    huge_bytes=100,
    error="busy",
)


def test_every_behaviour_field_survives_its_json_form() -> None:
    assert Behaviour.from_json(EVERY_FIELD_CHANGED.to_json()) == EVERY_FIELD_CHANGED


def test_every_behaviour_field_has_a_command_line_flag() -> None:
    argv = [
        argument
        for name, setting in SETTINGS.items()
        for argument in (setting.flag(name), str(getattr(EVERY_FIELD_CHANGED, name)))
    ]

    assert behaviour_of(parse_args(argv)) == EVERY_FIELD_CHANGED


def test_a_body_that_is_not_a_json_object_is_refused_and_recorded(
    stub: WorkerStub, client: httpx.Client
) -> None:
    response = client.post("/dial", content=b"not json", headers={"Content-Type": "text/plain"})

    assert response.status_code == 400
    assert [call.outcome for call in stub.calls] == [Outcome.BAD_REQUEST]


def test_reset_restores_a_well_behaved_worker_and_empties_the_record(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(fail=1.0)
    stub.set_behaviour(phone=PHONE, http_503=1.0)
    client.post("/dial", json=dial_body())

    stub.reset()

    assert stub.calls == []
    assert client.post("/dial", json=dial_body(PHONE)).json()["success"] is True


def test_the_control_endpoint_sets_a_behaviour_for_one_number(
    stub: WorkerStub, client: httpx.Client
) -> None:
    answer = client.post("/_control", json={"phone": PHONE, "behaviour": {"http503": 1.0}})

    assert answer.status_code == 200
    assert answer.json()["phones"][PHONE]["http503"] == 1.0
    assert client.post("/dial", json=dial_body(PHONE)).status_code == 503
    assert client.post("/dial", json=dial_body(OTHER_PHONE)).status_code == 200


def test_the_control_endpoint_clears_a_numbers_behaviour_given_null(
    stub: WorkerStub, client: httpx.Client
) -> None:
    stub.set_behaviour(phone=PHONE, fail=1.0)

    client.post("/_control", json={"phone": PHONE, "behaviour": None})

    assert client.post("/dial", json=dial_body(PHONE)).json()["success"] is True


def test_the_control_endpoint_resets(stub: WorkerStub, client: httpx.Client) -> None:
    stub.set_behaviour(fail=1.0)
    client.post("/dial", json=dial_body())

    client.post("/_control", json={"reset": True})

    assert stub.calls == []
    assert stub.behaviour() == Behaviour()


@pytest.mark.parametrize(
    "request_body",
    [
        {"bogus": 1},
        {"behaviour": {"failRate": 0.5}},
        {"behaviour": {"fail": 2}},
        {"behaviour": "fail"},
        {"cpuPercent": 140},
        {"answerRate": "high"},
        [1, 2],
    ],
    ids=str,
)
def test_the_control_endpoint_refuses_a_bad_request_and_changes_nothing(
    stub: WorkerStub, client: httpx.Client, request_body: Any
) -> None:
    before = stub.state_json()

    response = client.post("/_control", json=request_body)

    assert response.status_code == 400
    assert response.json()["error"]
    assert stub.state_json() == before


def test_the_record_is_served_over_http(stub: WorkerStub, client: httpx.Client) -> None:
    client.post("/dial", json=dial_body(call_id="first"))
    middle = time.time()
    client.post("/dial", json=dial_body(call_id="second"))

    everything = client.get("/_calls").json()["calls"]
    recent = client.get("/_calls", params={"since": repr(middle)}).json()["calls"]

    assert [call["body"]["callId"] for call in everything] == ["first", "second"]
    assert [call["body"]["callId"] for call in recent] == ["second"]
    assert everything[0]["outcome"] == "ok"


def test_deleting_the_record_over_http_empties_it(stub: WorkerStub, client: httpx.Client) -> None:
    client.post("/dial", json=dial_body())

    client.delete("/_calls")

    assert stub.calls == []


def test_the_stub_answers_its_own_liveness_check(client: httpx.Client) -> None:
    assert client.get("/_health").json() == {"status": "ok"}


def test_health_reports_the_simulated_cpu_and_answer_rate(client: httpx.Client) -> None:
    client.post("/_control", json={"cpuPercent": 92.5, "answerRate": 0.3})

    health = client.get("/health").json()

    assert (health["cpuPercent"], health["answerRate"]) == (92.5, 0.3)
    assert health["takenAt"] == pytest.approx(time.time(), abs=5)


def test_health_counts_the_dials_of_the_last_second(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/dial", json=dial_body())

    assert client.get("/health").json()["callsLastSecond"] == 3


def test_an_unknown_route_is_not_found(client: httpx.Client) -> None:
    assert client.get("/nowhere").status_code == 404
    assert client.post("/nowhere", json={}).status_code == 404


def test_a_remote_stub_drives_a_stub_through_http(stub: WorkerStub) -> None:
    with RemoteStub(stub.url) as remote:
        remote.set_behaviour(phone=PHONE, fail=1.0)
        remote.set_health(cpu_percent=85.0)
        httpx.post(f"{stub.url}/dial", json=dial_body(PHONE))

        assert [call.outcome for call in remote.calls] == [Outcome.FAIL]
        assert remote.health().cpu_percent == 85.0
        remote.reset()
        assert remote.calls == []


def test_a_remote_stub_reports_a_refused_control_as_value_error(stub: WorkerStub) -> None:
    with RemoteStub(stub.url) as remote, pytest.raises(ValueError, match="unknown"):
        remote.control({"nonsense": True})


def test_the_command_line_serves_with_the_behaviour_given_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.worker_stub",
            "--port",
            str(port),
            "--fail-rate",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        answer = httpx.post(f"http://127.0.0.1:{port}/dial", json=dial_body()).json()
    finally:
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=10)

    assert answer["success"] is False
    assert process.returncode == 0
    assert f"http://127.0.0.1:{port}" in output


def test_the_command_line_refuses_an_impossible_rate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.worker_stub", "--port", "0", "--fail-rate", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "fail" in result.stdout
