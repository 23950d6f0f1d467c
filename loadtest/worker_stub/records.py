"""What the stub records and reports: each dial it received (`Call`) and its own simulated
health (`StubHealth`), with their JSON forms; `StubHandle` reads both, in this process or not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .behaviour import Outcome


@dataclass(frozen=True)
class Call:
    """One request the stub received on `/dial`, stamped when it arrived."""

    at: float
    """Unix time (seconds) of arrival."""
    monotonic: float
    """`time.monotonic()` at arrival, in the stub's process."""
    outcome: Outcome
    delay: float
    body: Mapping[str, object] | None
    """The JSON object received, or None when the body was not one."""
    key: str | None = None
    """Its ``Idempotency-Key`` header, when it carried one."""
    repeat: bool = False
    """A key the stub had already placed a call for (when it honours keys): not placed again."""
    refused: bool = False
    """Placed, and refused by the carrier (SIP 503 after `/dial` answered)."""

    @property
    def placed(self) -> bool:
        """Whether this request placed a call."""
        return self.outcome is Outcome.OK and not self.repeat

    @property
    def phone_number(self) -> str | None:
        value = self.body.get("phoneNumber") if self.body is not None else None
        return value if isinstance(value, str) else None

    @property
    def call_id(self) -> str | None:
        value = self.body.get("callId") if self.body is not None else None
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "monotonic": self.monotonic,
            "outcome": self.outcome.value,
            "delay": self.delay,
            "body": None if self.body is None else dict(self.body),
            "key": self.key,
            "repeat": self.repeat,
            "refused": self.refused,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        body = data["body"]
        return cls(
            at=float(data["at"]),
            monotonic=float(data["monotonic"]),
            outcome=Outcome(data["outcome"]),
            delay=float(data["delay"]),
            body=body if isinstance(body, dict) else None,
            key=data.get("key"),
            repeat=bool(data.get("repeat", False)),
            refused=bool(data.get("refused", False)),
        )


@dataclass(frozen=True)
class StubHealth:
    """The worker's own (simulated) health, as `GET /health` reports it."""

    cpu_percent: float
    answer_rate: float
    calls_last_second: int
    taken_at: float
    refused: int = 0
    """Calls the carrier refused so far."""

    def to_json(self) -> dict[str, object]:
        return {
            "status": "ok",
            "cpuPercent": self.cpu_percent,
            "answerRate": self.answer_rate,
            "callsLastSecond": self.calls_last_second,
            "takenAt": self.taken_at,
            "refused": self.refused,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StubHealth:
        return cls(
            cpu_percent=float(data["cpuPercent"]),
            answer_rate=float(data["answerRate"]),
            calls_last_second=int(data["callsLastSecond"]),
            taken_at=float(data["takenAt"]),
            refused=int(data.get("refused", 0)),
        )


def _in_range(value: object, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low <= value <= high


def check_health(cpu_percent: object, answer_rate: object) -> None:
    if cpu_percent is not None and not _in_range(cpu_percent, 0.0, 100.0):
        raise ValueError(f"cpuPercent must be between 0 and 100, got {cpu_percent!r}")
    if answer_rate is not None and not _in_range(answer_rate, 0.0, 1.0):
        raise ValueError(f"answerRate must be between 0 and 1, got {answer_rate!r}")


class StubHandle(Protocol):
    """What a simulation needs from a worker stub, in this process or behind a URL."""

    @property
    def url(self) -> str: ...

    def calls_since(self, at: float) -> list[Call]: ...

    def health(self) -> StubHealth: ...

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None: ...
