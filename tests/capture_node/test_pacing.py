"""FramePacer: steady release on a clock, no burst after a stall, interrupt for shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.pacing import FramePacer


class StepClock:
    """A clock that moves only when told, so the test never depends on real time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_frame_per_period_and_no_burst_after_a_stall():
    clock = StepClock()
    pacer = FramePacer(10, clock)
    pacer.restart()
    pacer.wait(timeout=1.0)  # the first frame is due at once
    with pytest.raises(SourceError, match="due in 0.1 s"):
        pacer.wait(timeout=0.01)  # the second only a period later
    clock.now += 0.1
    pacer.wait(timeout=0.01)
    clock.now += 30.0  # the loop was stalled for 30 s: one frame now, not 300
    pacer.wait(timeout=0.01)
    with pytest.raises(SourceError, match="due in 0.1 s"):
        pacer.wait(timeout=0.01)


def test_restart_changes_the_rate():
    clock = StepClock()
    pacer = FramePacer(10, clock)
    pacer.restart(fps=2)
    pacer.wait(timeout=1.0)
    with pytest.raises(SourceError, match="due in 0.5 s"):
        pacer.wait(timeout=0.01)


def test_interrupt_ends_a_wait_at_once_and_stays_set():
    pacer = FramePacer(0.5)  # a frame every 2 s of real time
    pacer.restart()
    pacer.wait(timeout=1.0)
    threading.Timer(0.05, pacer.interrupt).start()
    started = time.monotonic()
    with pytest.raises(SourceError, match="interrupted"):
        pacer.wait(timeout=5.0)
    assert time.monotonic() - started < 1.0
    pacer.restart()  # a reopen racing a stop: the stop still wins
    with pytest.raises(SourceError, match="interrupted"):
        pacer.wait(timeout=5.0)
