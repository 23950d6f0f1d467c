"""The package's public face and the scripts it ships."""

from __future__ import annotations

import dataclasses
import importlib.resources
import re

import pytest

import cps_limiter
from cps_limiter import ConfigurationError, Decision, FixedWindow, SlidingWindow, TokenBucket

LUA_FILES = ["fixed_window.lua", "sliding_window.lua", "token_bucket.lua"]


def test_all_is_sorted() -> None:
    assert cps_limiter.__all__ == sorted(cps_limiter.__all__)


def test_all_names_exactly_the_public_attributes() -> None:
    public = {name for name in vars(cps_limiter) if not name.startswith("_")}
    assert set(cps_limiter.__all__) - {"__version__"} == public


@pytest.mark.parametrize(
    "name",
    [
        "Limiter",
        "AsyncLimiter",
        "FixedWindow",
        "SlidingWindow",
        "TokenBucket",
        "Decision",
        "LimiterError",
        "BackendUnavailable",
        "RateLimitExceeded",
        "ConfigurationError",
    ],
)
def test_contract_names_are_exported(name: str) -> None:
    assert name in cps_limiter.__all__


def test_errors_form_one_tree() -> None:
    for error in (
        cps_limiter.BackendUnavailable,
        cps_limiter.RateLimitExceeded,
        cps_limiter.ConfigurationError,
    ):
        assert issubclass(error, cps_limiter.LimiterError)
    assert issubclass(ConfigurationError, ValueError)


@pytest.mark.parametrize("name", LUA_FILES)
def test_scripts_load_from_the_installed_package(name: str) -> None:
    source = importlib.resources.files("cps_limiter").joinpath("lua", name).read_text()
    header = "\n".join(line for line in source.splitlines() if line.startswith("--"))
    for word in ("KEYS[1]", "ARGV[1]", "Reply", "seconds"):
        assert word in header
    assert 'redis.call("TIME")' in source


@pytest.mark.parametrize("name", LUA_FILES)
def test_scripts_return_durations_as_strings(name: str) -> None:
    source = importlib.resources.files("cps_limiter").joinpath("lua", name).read_text()
    returns = [line for line in source.splitlines() if line.strip().startswith("return {")]
    assert returns
    for line in returns:
        # the last three fields are seconds: strings, never bare Lua numbers
        fields = re.split(r",\s*", line.strip()[len("return {") : -1])
        assert all(f.startswith(('"', "tostring(", "seconds(")) for f in fields[-3:]), line


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("cps_limiter").joinpath("py.typed").is_file()


def test_decision_is_frozen() -> None:
    decision = Decision(True, 1, 10, 9, 0.0, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]


def test_denied_decision_raises_rate_limit_exceeded_with_itself() -> None:
    denied = Decision(False, 0, 10, 0, 0.25, 1.0)
    with pytest.raises(cps_limiter.RateLimitExceeded) as caught:
        denied.raise_for_denied()
    assert caught.value.decision is denied
    assert caught.value.retry_after == 0.25


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FixedWindow(0), "limit must be > 0"),
        (lambda: FixedWindow(-5), "limit must be > 0"),
        (lambda: FixedWindow(1.5), "limit must be an int"),  # type: ignore[arg-type]
        (lambda: FixedWindow(True), "limit must be an int"),
        (lambda: FixedWindow(10, window=0), "window must be > 0"),
        (lambda: SlidingWindow(0), "limit must be > 0"),
        (lambda: SlidingWindow(10, window=float("nan")), "window must be a finite number"),
        (lambda: TokenBucket(rate=0), "rate must be a finite number > 0"),
        (lambda: TokenBucket(rate=10, burst=0), "burst must be > 0"),
        (lambda: TokenBucket(rate=10, period=-1), "period must be a finite number > 0"),
    ],
)
def test_invalid_strategy_names_the_argument(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_strategies_are_immutable_values() -> None:
    assert FixedWindow(10) == FixedWindow(10)
    assert hash(SlidingWindow(5)) == hash(SlidingWindow(5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        FixedWindow(10).limit = 20  # type: ignore[misc]


def test_token_bucket_burst_defaults_to_rate_rounded_up() -> None:
    assert TokenBucket(rate=10).burst == 10
    assert TokenBucket(rate=2.5).burst == 3


def test_unknown_url_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="url must start with one of"):
        cps_limiter.Limiter.from_url("http://localhost", FixedWindow(1))


def test_unknown_fail_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="fail_mode"):
        cps_limiter.Limiter.from_url("memory://", FixedWindow(1), fail_mode="sometimes")


def test_the_adaptive_prelude_documents_its_keys_and_arguments() -> None:
    source = importlib.resources.files("cps_limiter").joinpath("lua", "adaptive.lua").read_text()
    assert source.startswith("-- Adaptive limit")
    for word in ("KEYS[#KEYS - 1]", "KEYS[#KEYS]", "ARGV[#ARGV]", "seconds"):
        assert word in source
