"""The one clock of camfabric, injectable so that tests move time instead of sleeping.

Two readings, never mixed:

- `monotonic()` — seconds that only move forward: every duration, interval, timeout, rate
  limit, pause and expiry. NTP stepping the wall clock an hour cannot stretch or shrink them.
- `wall_ns()` / `wall()` — the wall clock: only for stamps that travel (`t_capture_ns`,
  `t_publish_ns`, times in JSON) and for calendar questions (a quota that resets at midnight).

    clock = clock or SYSTEM_CLOCK
    deadline = clock.monotonic() + 2.0

`ManualClock` is the test double: both readings move only when told, and the wall clock can be
stepped on its own (`step_wall(3600)`) the way NTP steps a Pi's clock.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What camfabric reads the time from."""

    def monotonic(self) -> float: ...

    def wall_ns(self) -> int: ...

    def wall(self) -> float: ...


class SystemClock:
    """The host's clocks: `time.monotonic()` and `time.time_ns()`."""

    monotonic = staticmethod(time.monotonic)
    wall_ns = staticmethod(time.time_ns)
    wall = staticmethod(time.time)


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock for tests: `advance(s)` moves both readings, `step_wall(s)` only the wall clock."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_790_000_000.0) -> None:
        self._lock = threading.Lock()
        self._mono = float(monotonic)
        self._wall_ns = int(wall * 1e9)

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def wall_ns(self) -> int:
        with self._lock:
            return self._wall_ns

    def wall(self) -> float:
        return self.wall_ns() / 1e9

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the monotonic clock does not go back")
        with self._lock:
            self._mono += seconds
            self._wall_ns += int(seconds * 1e9)

    def step_wall(self, seconds: float) -> None:
        with self._lock:
            self._wall_ns += int(seconds * 1e9)


__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]
