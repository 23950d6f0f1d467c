"""Procedures written once for `Limiter` and `AsyncLimiter`, whatever their I/O.

A procedure that needs more than one call to Redis (a late request sent again, several rules
asked until they allow) is a generator: it yields each step, a `Call` to make through the
limiter's backend or a number of seconds to sleep, and is sent the step's result, or thrown
its error. The sync and the asyncio limiter only make the steps (`Run`); what a step means,
and everything between two steps, is written once.

The single decision's common path, one EVALSHA and a reply, is no procedure: a generator per
decision is work the hot path does without, and its one call needs no driving.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Call(NamedTuple):
    """``backend.call(operation, *args, on_spare=on_spare)``, or its asyncio twin."""

    operation: Callable[..., Any]
    args: tuple[Any, ...]
    on_spare: bool = False


Step = Call | float
"""A call through the backend, or seconds to sleep."""
Steps = Generator[Step, Any, T]


class Run(Generic[T]):
    """One procedure being run: the caller makes ``step`` inside ``with run:``, setting
    ``reply``; leaving the block sends the procedure the reply, or throws it the error (a
    cancellation too, so that its context managers see what ended them), and takes its next
    step, until ``done``, with ``value`` its result. An error the procedure does not handle
    goes on to the caller."""

    __slots__ = ("_steps", "done", "reply", "step", "value")

    def __init__(self, steps: Steps[T]) -> None:
        self._steps = steps
        self.done = False
        self.reply: Any = None
        self.step: Step = 0.0
        self.value: T
        self.__exit__(None, None, None)

    def __enter__(self) -> Run[T]:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> bool:
        try:
            if error is None:
                self.step = self._steps.send(self.reply)
            else:
                self.step = self._steps.throw(error)
        except StopIteration as finished:
            self.done, self.value = True, finished.value
        self.reply = None
        return True
