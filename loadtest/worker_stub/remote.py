"""`RemoteStub`: a worker stub in another process, driven through its control endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Self

import httpx

from .behaviour import Behaviour
from .records import Call, StubHealth

REMOTE_TIMEOUT_SECONDS: Final = 10.0


class RemoteStub:
    """A worker stub in another process, driven through its control endpoints."""

    def __init__(self, url: str, *, timeout: float = REMOTE_TIMEOUT_SECONDS) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.Client(base_url=self._url, timeout=timeout)

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def control(self, request: Mapping[str, object]) -> dict[str, Any]:
        response = self._client.post("/_control", json=dict(request))
        if response.status_code == HTTPStatus.BAD_REQUEST:
            raise ValueError(response.json()["error"])
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def set_behaviour(self, phone: str | None = None, **changes: Any) -> None:
        self.control({"phone": phone, "behaviour": Behaviour(**changes).to_json()})

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None:
        self.control({"cpuPercent": cpu_percent, "answerRate": answer_rate})

    def reset(self) -> None:
        self.control({"reset": True})

    def calls_since(self, at: float) -> list[Call]:
        response = self._client.get("/_calls", params={"since": repr(at)})
        response.raise_for_status()
        return [Call.from_json(item) for item in response.json()["calls"]]

    @property
    def calls(self) -> list[Call]:
        return self.calls_since(0.0)

    def health(self) -> StubHealth:
        response = self._client.get("/health")
        response.raise_for_status()
        return StubHealth.from_json(response.json())
