"""One dial: wait for the permit's moment, POST the seed's command with its idempotency key, and
report to the ledger. Runs on a thread of the dial pool."""

from __future__ import annotations

import logging
import time
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ._campaigns import CALL_IDS
from ._claims import task_identity
from ._invocation import Invocation, Parts
from ._ledger import Ledger
from ._logging import LOGGER_NAME
from ._outcome import TOO_LATE_ERROR, TaskStatus
from ._version import __version__
from ._worker import DialOutcome, DialStatus

tracer = trace.get_tracer(LOGGER_NAME, __version__)
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
"""The same on every delivery of a task (campaign, contact, attempts): a worker that places no
second call for a key it has placed closes the one window no dialer can close alone."""


def send_one(
    ledger: Ledger,
    parts: Parts,
    invocation: Invocation,
    index: int,
    parent: otel_context.Context,
    link: Link | None,
    at: float,
    spacing: float,
) -> None:
    """Runs on a pool thread from the moment ``at`` (monotonic) on: the span's parent is passed
    in, as contextvars do not follow work into a ThreadPoolExecutor. Reports to the ledger."""
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    if spacing:
        parts.gate.wait_turn(spacing)
    left = invocation.dials_end - time.monotonic()
    if left <= 0:
        # Too late to dial and hear back before the invocation ends: handed back, unsent.
        ledger.handed_back(index, TaskStatus.RATE_LIMITED, TOO_LATE_ERROR)
        ledger.log(logging.WARNING, "rate_limited", TOO_LATE_ERROR, task=index, retry=True)
        return
    task = ledger.task(index)
    call_id = ledger.records[index].call_id or CALL_IDS.next(task)
    command = {
        "callId": call_id,
        "phoneNumber": task.phone_number,
        "campaignId": task.campaign_id,
        "contactId": task.contact_id,
        "audioFileUrl": task.audio_file_url,
        "ivrFlow": task.ivr_flow,
        "metadata": task.metadata,
    }
    with tracer.start_as_current_span(
        "dialer.dial",
        context=parent,
        kind=SpanKind.CLIENT,
        links=[link] if link is not None else None,
        attributes={
            "dialer.call_id": call_id,
            "dialer.campaign_id": task.campaign_id,
            "dialer.contact_id": task.contact_id,
            "dialer.attempts": task.attempts,
        },
    ) as span:
        headers = {
            IDEMPOTENCY_HEADER: task_identity(task.campaign_id, task.contact_id, task.attempts)
        }
        propagate.inject(headers)  # traceparent, when an SDK records this span
        started = time.monotonic()
        ledger.sending(index)
        ledger.note_sent_second(int(time.time()))
        outcome = parts.worker.dial(command, headers, timeout=left)
        ledger.dialed(index, outcome)
        span.set_attribute("dialer.outcome", str(outcome.status))
        if outcome.http_status is not None:
            span.set_attribute("http.response.status_code", outcome.http_status)
        if outcome.status is not DialStatus.SUCCESSFUL:
            span.set_status(Status(StatusCode.ERROR, outcome.error))
        _log_dial(ledger, index, outcome, call_id, time.monotonic() - started)


def _log_dial(
    ledger: Ledger, index: int, outcome: DialOutcome, call_id: str, seconds: float
) -> None:
    fields = {
        "callId": call_id,
        "durationMs": round(seconds * 1000, 1),
        "httpStatus": outcome.http_status,
    }
    if outcome.status is DialStatus.SUCCESSFUL:
        ledger.log(logging.INFO, "dial_success", "dial command sent", task=index, **fields)
        return
    level, event = (
        (logging.WARNING, "rate_limited")
        if outcome.status is DialStatus.RATE_LIMITED
        else (logging.ERROR, "worker_error")
        if outcome.worker_error
        else (logging.WARNING, "dial_failure")
    )
    ledger.log(level, event, outcome.error or "", task=index, retry=outcome.retry, **fields)
