"""One batch of dial tasks, from the pipe's event to the result the pipe reads back.

The order of the steps is the design:

1. validate each task and apply the campaign gates, with no Redis and no network (`_validate`);
2. claim every remaining task in one pipelined round trip, so that a redelivered task is a
   duplicate before it costs a permit (`_holdings.claim`);
3. take permits for the whole batch (``permits=N, partial=True``), waiting for the next slots
   within the budget, and hand each granted task to the dial pool at once (`_dial`);
4. whatever happened above, end every task the steps left open and settle what each task holds
   in one place (`Ledger.close`, `_holdings.settle`);
5. build the result, record the metrics and log the batch's end (`_report`).

Each step reports to the batch's `Ledger`; none sees the others. An exception in a step is
logged with its stack, and the tasks it left open go back to the queue: a batch never loses a
task. A Redis that cannot be reached costs neither the batch nor the calls (fail-open, as the
seed asks) unless ``CPS_FAIL_MODE=closed``, in which case nothing is dialed and every task comes
back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import trace

from ._dial import dial
from ._holdings import claim, settle
from ._invocation import Invocation, Parts
from ._ledger import Ledger
from ._logging import LOGGER_NAME, log_event
from ._report import BatchResult, raise_if_unreportable, report, result_of
from ._validate import validate
from ._version import __version__

tracer = trace.get_tracer(LOGGER_NAME, __version__)


def run(parts: Parts, event: list[Any], context: Any) -> BatchResult:
    """Take one batch through its steps; see the module's docstring."""
    started = time.monotonic()
    invocation = Invocation.start(parts.settings, context)
    ledger = Ledger.of(event)
    with tracer.start_as_current_span(
        "dialer.batch", attributes={"dialer.batch_size": len(event)}
    ) as span:
        log_event(
            logging.INFO,
            "batch_start",
            "batch start",
            batchSize=len(event),
            requestId=invocation.request_id,
            waitBudgetSeconds=round(invocation.budget, 3),
        )
        try:
            leases = parts.settings.worker_frees_leases
            ready = validate(ledger, event, parts.clock(), leases=leases)
            dial(ledger, claim(ledger, ready, parts, invocation), parts, invocation)
        except Exception as error:
            log_event(
                logging.ERROR,
                "batch_error",
                f"batch step raised {type(error).__name__}; its open tasks go back to the queue",
                exc_info=True,
                requestId=invocation.request_id,
            )
        finally:
            # Runs on BaseException too: a task is given back before the process goes.
            ended, holdings = ledger.close()
            for index in ended:
                outcome = ledger.records[index].outcome
                message = outcome.error if outcome is not None else ""
                ledger.log(logging.ERROR, "task_ended_on_error", message or "", task=index)
            try:
                settle(ledger, parts, invocation, holdings)
            except Exception:
                # Every task has its ending: what could not be settled ends with its lifetime.
                log_event(logging.ERROR, "settle_error", "settling raised", exc_info=True)
        result = result_of(ledger)
        try:
            report(ledger, parts, invocation, result, span, time.monotonic() - started)
        except Exception:
            # The result is the pipe's: a metric or a log line is no reason to lose it.
            log_event(logging.ERROR, "report_error", "batch report raised", exc_info=True)
    raise_if_unreportable(ledger, event, parts.settings.max_cps)
    return result
