"""Give back the claims of tasks that surely never reached the worker, so that their retry may
dial: tasks that got no permit in time, and dials the worker never received or refused before
placing the call (connection refused, HTTP 429 or 503). Every other claim stays: a call that may
have gone out is never dialed again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._claims import give_back

if TYPE_CHECKING:
    from ._batch import Batch


def release(batch: Batch) -> None:
    """One round trip for every claim to give back, none when there is none."""
    keys = [
        key
        for index, key in batch.claimed.items()
        if index not in batch.dialed or not batch.dialed[index].reached_worker
    ]
    if keys:
        give_back(batch, keys)
