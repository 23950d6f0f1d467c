"""`WorkerStub`: the stub server in a background thread of this process, and its state."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Final, Self

from .behaviour import Behaviour, Outcome
from .calls import CallEnds
from .carrier import Carrier, Refusals
from .records import Call, StubHealth, check_health
from .routes import StubServer

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_CPU_PERCENT: Final = 35.0
DEFAULT_ANSWER_RATE: Final = 0.6
SERVE_POLL_SECONDS: Final = 0.05


class WorkerStub:
    """The stub server, run in a background thread of this process.

    `reset()` goes back to the behaviour and health given here and empties the record.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        behaviour: Behaviour | None = None,
        *,
        cpu_percent: float = DEFAULT_CPU_PERCENT,
        answer_rate: float = DEFAULT_ANSWER_RATE,
        call_ends: CallEnds | None = None,
        honour_keys: bool = True,
        carrier: Carrier | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        """``call_ends``: answered calls last its ``call_seconds``, and each one's end frees
        its campaign lease (the stub closes it when it stops). ``honour_keys``: a dial whose
        ``Idempotency-Key`` already placed a call places none and is answered as a duplicate;
        False is the seed's worker, which knows no key. ``carrier``: placed calls go to it, and
        those it refuses are still answered as placed (the SIP 503 comes later), and reported
        to ``refusals`` when given (the stub closes it when it stops)."""
        check_health(cpu_percent, answer_rate)
        self.call_ends = call_ends
        self.honour_keys = honour_keys
        self.carrier = carrier
        self.refusals = refusals
        self._placed_keys: set[str | None] = set()
        self._initial = (behaviour or Behaviour(), cpu_percent, answer_rate)
        self._lock = threading.Lock()
        self._default = self._initial[0]
        self._per_phone: dict[str, Behaviour] = {}
        self._sequence: dict[str | None, int] = {}
        self._calls: list[Call] = []
        self._cpu_percent = cpu_percent
        self._answer_rate = answer_rate
        self._stopping = threading.Event()
        self._server = StubServer((host, port), self)
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a WorkerStub starts once")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_SECONDS},
            name=f"worker-stub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still hanging or streaming are cut short."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        if self.call_ends is not None:
            self.call_ends.close()
        if self.refusals is not None:
            self.refusals.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # configuration

    def set_behaviour(
        self,
        phone: str | None = None,
        behaviour: Behaviour | None = None,
        **changes: Any,
    ) -> Behaviour:
        """Set the behaviour for `phone` (or the default one for every other number).

        `changes` apply on top of `behaviour`, or of a well-behaved worker when it is None.
        """
        chosen = replace(behaviour or Behaviour(), **changes)
        with self._lock:
            if phone is None:
                self._default = chosen
            else:
                self._per_phone[phone] = chosen
            self._sequence.pop(phone, None)
        return chosen

    def clear_behaviour(self, phone: str) -> None:
        with self._lock:
            self._per_phone.pop(phone, None)
            self._sequence.pop(phone, None)

    def behaviour(self, phone: str | None = None) -> Behaviour:
        with self._lock:
            return self._per_phone.get(phone, self._default) if phone else self._default

    def set_health(
        self, *, cpu_percent: float | None = None, answer_rate: float | None = None
    ) -> None:
        check_health(cpu_percent, answer_rate)
        with self._lock:
            if cpu_percent is not None:
                self._cpu_percent = float(cpu_percent)
            if answer_rate is not None:
                self._answer_rate = float(answer_rate)

    def reset(self) -> None:
        with self._lock:
            self._default, self._cpu_percent, self._answer_rate = self._initial
            self._per_phone.clear()
            self._sequence.clear()
            self._calls.clear()
            self._placed_keys.clear()

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # observation

    @property
    def calls(self) -> list[Call]:
        """Every request to `/dial` so far, in order of arrival."""
        with self._lock:
            return list(self._calls)

    def calls_since(self, at: float) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if call.at >= at]

    def health(self) -> StubHealth:
        now = time.monotonic()
        with self._lock:
            recent = 0
            for call in reversed(self._calls):
                if call.monotonic < now - 1.0:
                    break
                recent += 1
            refused = 0 if self.carrier is None else self.carrier.refused
            return StubHealth(
                self._cpu_percent, self._answer_rate, recent, time.time(), refused=refused
            )

    def state_json(self) -> dict[str, object]:
        with self._lock:
            return {
                "default": self._default.to_json(),
                "phones": {phone: b.to_json() for phone, b in self._per_phone.items()},
                "cpuPercent": self._cpu_percent,
                "answerRate": self._answer_rate,
                "calls": len(self._calls),
            }

    # used by the request handler

    def _admit(
        self, arrived: float, body: Mapping[str, object], idempotency: str | None = None
    ) -> tuple[Call, Behaviour]:
        """Decide what to do with one dial and record it, under one lock."""
        phone = body.get("phoneNumber")
        with self._lock:
            if self.honour_keys and idempotency in self._placed_keys:
                call = Call(arrived, time.monotonic(), Outcome.OK, 0.0, body, idempotency, True)
                self._calls.append(call)
                return call, self._default
            key = phone if isinstance(phone, str) and phone in self._per_phone else None
            behaviour = self._per_phone[key] if key is not None else self._default
            number = self._sequence.get(key, 0) + 1
            self._sequence[key] = number
            delay, outcome = behaviour.plan(number)
            moment = time.monotonic()
            refused = (
                outcome is Outcome.OK
                and self.carrier is not None
                and not self.carrier.offer(moment)
            )
            call = Call(arrived, moment, outcome, delay, body, idempotency, refused=refused)
            self._calls.append(call)
            if call.placed and idempotency is not None:
                self._placed_keys.add(idempotency)
        return call, behaviour

    def _record_bad_request(self, arrived: float) -> None:
        with self._lock:
            self._calls.append(Call(arrived, time.monotonic(), Outcome.BAD_REQUEST, 0.0, None))

    def _control(self, request: Mapping[str, object]) -> None:
        """Apply one `POST /_control` body; raises ValueError on a bad one, changing nothing."""
        known = {"reset", "clearCalls", "phone", "behaviour", "cpuPercent", "answerRate"}
        unknown = sorted(set(request) - known)
        if unknown:
            raise ValueError(f"unknown control keys {unknown}; known: {sorted(known)}")
        phone = request.get("phone")
        if phone is not None and not isinstance(phone, str):
            raise ValueError("phone must be a string")
        cpu, answer = request.get("cpuPercent"), request.get("answerRate")
        check_health(cpu, answer)
        behaviour: Behaviour | None = None
        if "behaviour" in request and request["behaviour"] is not None:
            spec = request["behaviour"]
            if not isinstance(spec, dict):
                raise ValueError("behaviour must be a JSON object")
            behaviour = Behaviour.from_json(spec)
        if request.get("reset") is True:
            self.reset()
        if request.get("clearCalls") is True:
            self.clear_calls()
        if behaviour is not None:
            self.set_behaviour(phone, behaviour)
        elif "behaviour" in request and phone is not None:
            self.clear_behaviour(phone)
        self.set_health(
            cpu_percent=float(cpu) if isinstance(cpu, int | float) else None,
            answer_rate=float(answer) if isinstance(answer, int | float) else None,
        )
