"""The operator's command, run as an operator would: a subprocess against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from cps_limiter import Concurrency, FixedWindow, Limiter, Rule
from loadtest.servers import free_port


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cps_limiter._cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_takes_a_permit(redis_url: str, prefix: str) -> None:
    result = cli("check", "--redis-url", redis_url, "--prefix", prefix, "--limit", "7", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert (decision["allowed"], decision["granted"], decision["remaining"]) == (True, 1, 6)


def test_check_exits_1_when_denied(redis_url: str, raw_redis: redis.Redis, prefix: str) -> None:
    # The counters of this second and the next few already at the limit, so that the check
    # is denied wherever the clock falls while the command starts.
    seconds, _ = raw_redis.time()
    for second in range(int(seconds), int(seconds) + 5):
        raw_redis.set(f"{prefix}:{second}", 1, px=10_000)
    result = cli("check", "--redis-url", redis_url, "--prefix", prefix, "--limit", "1", "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["allowed"] is False


def test_check_with_the_token_strategy_paces_as_the_dialer_does(
    redis_url: str, prefix: str
) -> None:
    common = ("--redis-url", redis_url, "--prefix", prefix, "--limit", "7", "--json")
    result = cli("check", "--strategy", "token", *common)
    decision = json.loads(result.stdout)
    # A burst of 1: the permit taken leaves none until the next is due 1/7 s later.
    assert (decision["allowed"], decision["remaining"]) == (True, 0)


def test_status_shows_this_seconds_count_and_key(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    cli("check", "--redis-url", redis_url, "--prefix", prefix, "--limit", "50")
    result = cli("status", "--redis-url", redis_url, "--prefix", prefix, "--limit", "50", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["redis_reachable"] is True
    assert report["limit_in_force"] == 50
    assert report["key"].startswith(f"{prefix}:")
    # the count is this second's, as redis-cli GET would show it
    assert report["count"] == int(raw_redis.get(report["key"]) or 0)


def test_status_shows_the_carriers_refusals_and_the_aimd_limit(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    raw_redis.hincrby(f"{prefix}:adaptive", "refused", 4)  # the worker's one-line report
    common = ("--redis-url", redis_url, "--prefix", prefix, "--limit", "100", "--json")
    report = json.loads(cli("status", *common).stdout)
    assert (report["refusals_pending"], report["aimd_limit"]) == (4, None)
    assert report["limit_in_force"] == 85  # the status's own peek applied the decrease
    again = json.loads(cli("status", *common).stdout)
    assert (again["refusals_pending"], again["aimd_limit"]) == (0, 85.0)


def test_status_shows_the_leases_each_campaign_holds(redis_url: str, prefix: str) -> None:
    with Limiter.from_url(redis_url, FixedWindow(50), prefix=prefix) as limiter:
        for campaign, calls in (("campaign:a", 3), ("campaign:b", 1)):
            rules = [Rule(Concurrency(10, ttl=60), campaign)]
            ids = [f"{campaign}-{n}" for n in range(calls)]
            limiter.acquire_all(rules, calls, leases=ids)
        limiter.release("campaign:a", "campaign:a-0")
    result = cli("status", "--redis-url", redis_url, "--prefix", prefix, "--json")
    assert json.loads(result.stdout)["leases"] == {"campaign:a": 2, "campaign:b": 1}


def test_status_says_when_redis_does_not_answer() -> None:
    result = cli("status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "redis_reachable   False" in result.stdout
    assert "Connection refused" in result.stdout


def test_the_redis_url_comes_from_the_environment(redis_url: str, prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cps_limiter._cli", "status", "--prefix", prefix, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"REDIS_URL": redis_url, "MAX_CPS": "42", "PATH": ""},
    )
    report = json.loads(result.stdout)
    assert (report["redis_reachable"], report["base_limit"]) == (True, 42)


def test_an_operator_changes_the_limit_without_a_redeploy(redis_url: str, prefix: str) -> None:
    common = ("--redis-url", redis_url, "--prefix", prefix, "--limit", "100")
    assert cli("health", *common, "--cpu", "85", "--answer-rate", "0.9").returncode == 0
    status = json.loads(cli("status", *common, "--json").stdout)
    assert (status["health_tier"], status["limit_in_force"]) == ("high", 50)

    assert cli("set-limit", "60", "--ttl", "600", *common).returncode == 0
    status = json.loads(cli("status", *common, "--json").stdout)
    assert (status["cap"], status["limit_in_force"]) == (60, 30)
    assert 590 < status["cap_ttl_s"] <= 600

    assert cli("clear-limit", *common).returncode == 0
    assert cli("health", *common, "--cpu", "10").returncode == 0
    status = json.loads(cli("status", *common, "--json").stdout)
    assert (status["cap"], status["health_tier"], status["limit_in_force"]) == (None, "normal", 100)


def test_a_bad_value_is_one_clear_line(redis_url: str) -> None:
    result = cli("set-limit", "0", "--redis-url", redis_url)
    assert result.returncode == 2
    assert result.stderr.strip() == "cps-limiter: limit must be > 0, got 0"


def test_watch_prints_calls_against_the_limit(redis_url: str, prefix: str) -> None:
    common = ("--redis-url", redis_url, "--prefix", prefix, "--limit", "20")
    result = cli("watch", *common, "--seconds", "0.3")
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert lines
    assert all("/20" in line and "calls/s" in line for line in lines)
