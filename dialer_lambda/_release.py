"""Give back the claims of tasks that surely never reached the worker, so that their retry may
dial: tasks that got no permit in time, and dials the worker never received or refused before
placing the call (connection refused, HTTP 429 or 503). Every other claim stays: a call that may
have gone out is never dialed again. A campaign's concurrency lease is given back on the same
condition; the others are released by the worker when the call ends, or expire."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._campaigns import give_back_leases
from ._claims import give_back

if TYPE_CHECKING:
    from ._batch import Batch


def release(batch: Batch) -> None:
    """One round trip for every claim to give back, none when there is none; on the same
    condition, one more a campaign for the leases its tasks took."""
    keys = [key for index, key in batch.claimed.items() if _unsent(batch, index)]
    if keys:
        give_back(batch, keys)
    leases = [lease for index, lease in batch.leases.items() if _unsent(batch, index)]
    if leases:
        give_back_leases(batch, leases)


def _unsent(batch: Batch, index: int) -> bool:
    return index not in batch.dialed or not batch.dialed[index].reached_worker
