"""Batches delivered many times and concurrently, and what reached the worker."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from dialer_lambda import BatchResult, Dialer
from loadtest.worker_stub import WorkerStub
from tests.support.dialer import FakeContext, make_task
from tests.support.load import WAIT_TIMEOUT


def dialed(stub: WorkerStub) -> Counter[tuple[object, object]]:
    """How often each (campaignId, contactId) reached the worker."""
    return Counter(
        (call.body.get("campaignId"), call.body.get("contactId"))
        for call in stub.calls
        if call.body is not None
    )


def accounted(result: BatchResult, size: int) -> bool:
    counted = result["successful"] + result["failed"] + result["rateLimited"]
    return result["totalProcessed"] == size == counted + result["duplicates"]


TASKS = 60
BATCH = 10
STEP = 4
INVOCATIONS = 20
REPEATED = (0, 5, 10, 14)


def overlapping_batches() -> list[list[dict[str, Any]]]:
    """Sixteen batches of ten sliding over sixty tasks four at a time (every task in two or
    three of them), then four of those batches delivered again."""
    tasks = [make_task(index) for index in range(TASKS)]
    windows = [
        [tasks[(start * STEP + offset) % TASKS] for offset in range(BATCH)]
        for start in range(INVOCATIONS - len(REPEATED))
    ]
    return windows + [windows[index] for index in REPEATED]


def invoke_concurrently(dialer: Dialer, batches: list[list[dict[str, Any]]]) -> list[BatchResult]:
    """One invocation of ``dialer`` per batch, all released at once; their results."""
    start = threading.Barrier(len(batches))
    results: list[BatchResult] = []
    lock = threading.Lock()

    def invoke(batch: list[dict[str, Any]]) -> None:
        start.wait()
        result = dialer.process(batch, FakeContext())
        with lock:
            results.append(result)

    threads = [threading.Thread(target=invoke, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_TIMEOUT)
    return results
