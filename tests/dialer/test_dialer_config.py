"""Settings from the environment: the seed's names and defaults, and bad values refused at start
with a message naming the variable."""

from __future__ import annotations

import ssl
import subprocess
import sys
from typing import Any

import pytest

from cps_limiter import ConfigurationError, FixedWindow, SlidingWindow, TokenBucket
from dialer_lambda import Settings, strategy_for
from dialer_lambda._worker import WorkerClient


def test_the_defaults_are_the_seeds() -> None:
    settings = Settings.from_env({})

    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.node_worker_url == "http://localhost:3000"
    assert settings.max_cps == 100
    assert (settings.strategy, settings.fail_mode) == ("paced", "bounded")
    assert (settings.dial_timeout, settings.idempotency_ttl) == (5.0, 86_400)


def test_redis_host_and_port_make_the_url() -> None:
    settings = Settings.from_env({"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380"})

    assert settings.redis_url == "redis://cache.internal:6380/0"


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://user:secret@cache:6379/0", "REDIS_HOST": "ignored"}
    )

    assert settings.redis_url == "rediss://user:secret@cache:6379/0"


def test_an_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"MAX_CPS": "", "REDIS_URL": " "}).max_cps == 100


def test_every_setting_is_read() -> None:
    settings = Settings.from_env(
        {
            "NODE_WORKER_URL": "https://worker.internal:3000/",
            "MAX_CPS": "25",
            "CPS_STRATEGY": "Sliding",
            "CPS_FAIL_MODE": "closed",
            "DIAL_TIMEOUT_SECONDS": "2.5",
            "RATE_LIMIT_MAX_WAIT_SECONDS": "0",
            "IDEMPOTENCY_TTL_SECONDS": "600",
            "SERVICE_NAME": "dialer-staging",
            "WORKER_FREES_LEASES": "True",
        }
    )

    assert settings.node_worker_url == "https://worker.internal:3000"
    assert (settings.max_cps, settings.strategy, settings.fail_mode) == (25, "sliding", "closed")
    assert (settings.dial_timeout, settings.rate_limit_max_wait) == (2.5, 0.0)
    assert (settings.idempotency_ttl, settings.service_name) == (600, "dialer-staging")
    assert settings.worker_frees_leases is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CPS", "abc"),
        ("MAX_CPS", "0"),
        ("MAX_CPS", "-5"),
        ("MAX_CPS", "1.5"),
        ("REDIS_PORT", "http"),
        ("REDIS_PORT", "70000"),
        ("REDIS_HOST", "bad host"),
        ("REDIS_URL", "http://cache:6379"),
        ("REDIS_URL", "redis://cache:port"),
        ("NODE_WORKER_URL", "ftp://worker"),
        ("NODE_WORKER_URL", "worker:3000"),
        ("NODE_WORKER_URL", "http://"),
        ("CPS_STRATEGY", "leaky"),
        ("CPS_FAIL_MODE", "sometimes"),
        ("DIAL_TIMEOUT_SECONDS", "0"),
        ("DIAL_TIMEOUT_SECONDS", "nan"),
        ("DIAL_TIMEOUT_SECONDS", "soon"),
        ("RATE_LIMIT_MAX_WAIT_SECONDS", "-1"),
        ("RATE_LIMIT_MAX_WAIT_SECONDS", "inf"),
        ("IDEMPOTENCY_TTL_SECONDS", "0"),
        ("IDEMPOTENCY_TTL_SECONDS", "1d"),
        ("CPS_KEY_PREFIX", "cps {x}"),
        ("IDEMPOTENCY_KEY_PREFIX", "claims*"),
        ("LOG_LEVEL", "LOUD"),
        ("WORKER_FREES_LEASES", "maybe"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


def test_a_bad_value_fails_the_import_of_the_handler_at_start() -> None:
    env = {"MAX_CPS": "lots", "PATH": "", "REDIS_URL": "memory://"}
    completed = subprocess.run(
        [sys.executable, "-c", "import dialer_lambda.handler"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode != 0
    assert "MAX_CPS must be an integer" in completed.stderr


def test_the_redis_password_is_kept_out_of_repr_and_error_messages() -> None:
    settings = Settings.from_env({"REDIS_URL": "rediss://dialer:s3cret@cache:6379/0"})

    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"REDIS_URL": "http://dialer:s3cret@cache"})
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("strategy", "kind"),
    [("fixed", FixedWindow), ("sliding", SlidingWindow), ("token", TokenBucket)],
)
def test_cps_strategy_chooses_the_limiters_strategy_at_max_cps(strategy: str, kind: type) -> None:
    chosen = strategy_for(Settings.from_env({"CPS_STRATEGY": strategy, "MAX_CPS": "7"}))

    assert isinstance(chosen, kind)
    if isinstance(chosen, TokenBucket):
        assert (chosen.rate, chosen.burst) == (7, 1)  # paced evenly, never a burst
    else:
        assert chosen.capacity == 7


@pytest.mark.parametrize(
    ("url", "bundles_loaded"), [("http://worker:3000", 0), ("https://worker:3000", 1)]
)
def test_only_a_worker_over_https_loads_the_ca_bundle_at_start(
    monkeypatch: pytest.MonkeyPatch, url: str, bundles_loaded: int
) -> None:
    loaded: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loaded.append(args or kwargs)
        original(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    WorkerClient(url, timeout=1.0, max_connections=1).close()
    assert len(loaded) == bundles_loaded
