"""The send gate: a container's dials never leave together, also when they all fell due at once
(a container that stalled); they catch up at twice the pace."""

from __future__ import annotations

import itertools
import threading
import time

from dialer_lambda._gate import CATCH_UP, SendGate

SPACING = 0.05
DIALS = 6


def test_dials_due_at_once_leave_the_catch_up_spacing_apart() -> None:
    gate = SendGate()
    left: list[float] = []
    start = threading.Barrier(DIALS)

    def dial() -> None:
        start.wait()
        gate.wait_turn(SPACING)
        left.append(time.monotonic())

    threads = [threading.Thread(target=dial) for _ in range(DIALS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Without the gate they would leave within a millisecond or two of each other.
    gaps = [later - earlier for earlier, later in itertools.pairwise(sorted(left))]
    assert min(gaps) >= SPACING * CATCH_UP * 0.8


def test_a_dial_after_a_quiet_spell_leaves_at_once() -> None:
    gate = SendGate()
    gate.wait_turn(SPACING)
    time.sleep(SPACING)  # the quiet spell itself: the next dial is due after it
    before = time.monotonic()

    gate.wait_turn(SPACING)

    assert time.monotonic() - before < SPACING / 2
