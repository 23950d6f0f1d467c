"""The package's public face and the scripts it ships."""

from __future__ import annotations

import dataclasses
import importlib.resources

import pytest

import cps_limiter
from cps_limiter import (
    STRATEGY_NAMES,
    ConfigurationError,
    Decision,
    FixedWindow,
    Limiter,
    PacedWindow,
    SlidingWindow,
    Strategy,
    TokenBucket,
    strategy_from_name,
)
from cps_limiter._names import PACING_HEADROOM


def isort_order(name: str) -> tuple[int, str]:
    """The order ruff (RUF022) keeps ``__all__`` in: constants, then classes, then the rest."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted() -> None:
    assert cps_limiter.__all__ == sorted(cps_limiter.__all__, key=isort_order)


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


@pytest.mark.parametrize(
    ("name", "strategy"),
    [
        ("fixed", FixedWindow(7)),
        ("sliding", SlidingWindow(7)),
        # A burst of 1, as the dialer paces: calls spaced 1/limit apart.
        ("token", TokenBucket(rate=7, burst=1)),
        # Spaced a little more than 1/limit apart, for the jitter on the way to the carrier.
        ("paced", PacedWindow(7, headroom=PACING_HEADROOM)),
    ],
)
def test_a_strategy_by_name_is_the_one_the_name_says(name: str, strategy: Strategy) -> None:
    assert strategy_from_name(name, 7) == strategy


def test_strategy_names_are_the_names_the_factory_knows() -> None:
    assert STRATEGY_NAMES == ("paced", "fixed", "sliding", "token")
    for name in STRATEGY_NAMES:
        assert isinstance(strategy_from_name(name, 1), Strategy)


def test_an_unknown_strategy_name_names_itself_and_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"'leaky'.*paced, fixed, sliding, token"):
        strategy_from_name("leaky", 10)


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_a_strategy_by_name_needs_a_positive_int_limit(limit: object) -> None:
    with pytest.raises(ConfigurationError, match="limit must be"):
        strategy_from_name("token", limit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limiter.from_url("memory://", FixedWindow(1), decision_timeout=1.0),
        lambda: Limiter(object(), FixedWindow(1), decision_timeout=1.0),
    ],
    ids=["from_url", "constructor"],
)
def test_a_sync_limiter_refuses_decision_timeout_and_says_what_bounds_it(
    make: object,
) -> None:
    with pytest.raises(ConfigurationError, match=r"decision_timeout.*socket timeouts"):
        make()  # type: ignore[operator]
