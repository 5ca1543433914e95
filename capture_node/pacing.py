"""FramePacer: releasing frames at a camera's rate for sources that have no camera to wait on.

Synthetic scenes and file replays would otherwise deliver frames as fast as they can be made.
The pacer releases one frame per period on an injected clock, never bursts to catch up after a
stall (a paused process, a slow disk), and ends a wait at once when interrupted for shutdown —
an interrupt stays set, so a stop that races a reopen still wins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import SourceError


class FramePacer:
    """One frame per `1/fps` seconds of `clock`, waited for on an Event."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = 1.0 / float(fps)
        self.clock = clock
        self._due = 0.0
        self._interrupted = threading.Event()

    @property
    def fps(self) -> float:
        return 1.0 / self.period

    def restart(self, fps: float | None = None) -> None:
        """Start releasing from now (at a new rate, if given): the first frame is due at once."""
        if fps is not None:
            self.period = 1.0 / float(fps)
        self._due = self.clock()

    def wait(self, timeout: float) -> None:
        """Block until the next frame is due; SourceError when that is beyond `timeout` s or
        when interrupted."""
        now = self.clock()
        if now - self._due > self.period:  # fell behind: start afresh rather than burst
            self._due = now
        wait = self._due - now
        if wait > timeout:
            self._interrupted.wait(timeout)
            raise SourceError(f"next frame due in {wait:.1f} s, beyond the {timeout:g} s read "
                              f"timeout (fps {self.fps:g} is too low for it)")
        if (wait > 0 and self._interrupted.wait(wait)) or self._interrupted.is_set():
            raise SourceError("interrupted")
        self._due += self.period

    def interrupt(self) -> None:
        """End a wait now, and every later one (shutdown)."""
        self._interrupted.set()
