"""Frame intake: which frames go to detection, and when.

A camera's frame is handed to detection at most once per that camera's interval (default
2 s), however many frames arrive and whatever detector runs; and never while the previous
frame of that camera is still being detected (one call in flight per camera). Everything else
is dropped on arrival: the subscriber keeps only the newest frame, so nothing queues.

Time is passed in as `now` (epoch seconds), so a test drives a minute of 30 fps frames in
a loop without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass


class RateLimiter:
    """At most one acquisition per key per interval."""

    def __init__(self, intervals: Mapping[int, float]) -> None:
        self.intervals = dict(intervals)
        self._next: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: int, now: float) -> bool:
        """True (and the interval starts now) when `key` may go at `now`."""
        with self._lock:
            last = self._last.get(key)
            # A clock that stepped backwards must not block a camera until it catches up.
            if last is None or now < last or now >= self._next[key]:
                self._last[key] = now
                self._next[key] = now + self.intervals[key]
                return True
            return False

    def next_allowed(self, key: int) -> float | None:
        """When `key` may go next (epoch s); None before its first acquisition."""
        return self._next.get(key)


@dataclass
class IntakeCounts:
    """Frames of one camera: seen, handed to detection, and why the rest were not."""

    offered: int = 0
    accepted: int = 0
    too_soon: int = 0
    busy: int = 0


class FrameIntake:
    """Decides, frame by frame, which ones a camera's detector gets."""

    def __init__(self, intervals: Mapping[int, float]) -> None:
        self.limiter = RateLimiter(intervals)
        self.counts = {cam: IntakeCounts() for cam in intervals}
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def offer(self, cam: int, now: float) -> bool:
        """True when camera `cam`'s frame arriving at `now` should be detected; the caller
        then owes a `done(cam)` when detection ends."""
        counts = self.counts.get(cam)
        if counts is None:
            return False
        with self._lock:
            counts.offered += 1
            if cam in self._busy:
                counts.busy += 1
                return False
            if not self.limiter.try_acquire(cam, now):
                counts.too_soon += 1
                return False
            self._busy.add(cam)
            counts.accepted += 1
            return True

    def done(self, cam: int) -> None:
        """Detection of `cam`'s frame finished; its next frame may be taken when due."""
        with self._lock:
            self._busy.discard(cam)

    def busy(self, cam: int) -> bool:
        return cam in self._busy

    def next_allowed(self, cam: int) -> float | None:
        return self.limiter.next_allowed(cam)
