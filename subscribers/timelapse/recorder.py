"""The right frame for each trigger: the first one captured `settle_s` after it.

    recorder = FrameRecorder(subscriber, cam=0, settle_s=0.5, frame_timeout_s=5.0,
                             on_frame=…, on_skip=…, on_end=…).start()
    recorder.trigger(trigger)          # from the Moonraker thread; never blocks
    recorder.end(print_id, state)      # after that print's last trigger is handled
    recorder.stop()

One thread takes the jobs in order. For a trigger at T it subscribes the camera's JPEG at once
(on demand: the node encodes nothing between triggers), waits until T + settle_s, and takes the
first frame whose *capture* time, on this host's clock, is after that moment — never a cached
frame from before — then releases the subscription. That capture time is an estimate that may
run late by a few milliseconds, so the frame must be past the moment by `ESTIMATE_MARGIN_S`
(20 ms). No such frame within `frame_timeout_s`: the frame is skipped ("no_frame"), logged
once, and the print goes on.

Triggers never queue up: while one is being captured, a newer trigger of the same print
replaces one still waiting, and the replaced one is skipped ("superseded"). A storm of layer
changes therefore costs at most one capture in hand and one waiting, and every frame taken is
still newer than its own trigger.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ...protocol import wire
from ...protocol.errors import ClosedError, FrameTimeout, UnknownCamera
from ...protocol.subscriber import Subscriber, captured_locally_ns
from ...runtime.clock import SYSTEM_CLOCK, Clock
from ...runtime.errors import CamfabricError
from ...runtime.logonce import LogOnce
from .triggers import Trigger

log = logging.getLogger(__name__)

# A frame's capture time on this host is estimated from its arrival (`captured_locally_ns`),
# and runs late by whatever part of every arrival is late: the link's quickest transit, and
# the receiving thread waking late on a loaded host, which no baseline can see (over 1.7 ms in
# one loaded process holding a node, Moonraker's fake and this service; 3.7 ms beside four busy
# loops). A frame is taken only when its estimate is this much past its moment.
ESTIMATE_MARGIN_S = 0.02


@dataclass(frozen=True, slots=True)
class _End:
    print_id: str
    state: str


class FrameRecorder:
    """Captures a frame per trigger on its own thread; reports frames, skips and print ends."""

    def __init__(self, subscriber: Subscriber, *, cam: int, settle_s: float, frame_timeout_s: float,
                 on_frame: Callable[[Trigger, wire.Frame], None],
                 on_skip: Callable[[Trigger, str, str], None],
                 on_end: Callable[[str, str], None],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.subscriber = subscriber
        self.cam = cam
        self.settle_s = settle_s
        self.frame_timeout_s = frame_timeout_s
        self.on_frame = on_frame
        self.on_skip = on_skip
        self.on_end = on_end
        self.clock = clock
        self._jobs: deque[Trigger | _End] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failures = LogOnce(log)

    def start(self) -> FrameRecorder:
        self._thread = threading.Thread(target=self._run, name="timelapse-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.5) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def trigger(self, trigger: Trigger) -> None:
        """Queue a trigger; a waiting trigger of the same print is replaced (and skipped)."""
        superseded = None
        with self._cond:
            if self._jobs and isinstance(self._jobs[-1], Trigger) \
                    and self._jobs[-1].print_id == trigger.print_id:
                superseded = self._jobs.pop()
            self._jobs.append(trigger)
            self._cond.notify_all()
        if superseded is not None:
            self.on_skip(superseded, "superseded", "a newer trigger came before its frame was taken")

    def end(self, print_id: str, state: str) -> None:
        """The print ended: `on_end` runs once its triggers before this call are handled."""
        with self._cond:
            self._jobs.append(_End(print_id, state))
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._jobs.popleft()
            try:
                if isinstance(job, _End):
                    self.on_end(job.print_id, job.state)
                else:
                    self._capture(job)
            except Exception:  # one job's failure must not end the recorder
                log.exception("timelapse: handling %s failed; carrying on", job)

    def _capture(self, trigger: Trigger) -> None:
        due = trigger.t + self.settle_s
        after_ns = int((due + ESTIMATE_MARGIN_S) * 1e9)  # what the capture estimate must pass
        try:
            with self.subscriber.watching(self.cam):  # subscribed now: warm by the time it is due
                if self._wait_until(due):
                    return
                remaining = due + self.frame_timeout_s - self.clock.monotonic()
                frame = self.subscriber.latest(self.cam, timeout=max(0.0, remaining),
                                               captured_after_ns=after_ns)
        except ClosedError:
            return  # stopping
        except (FrameTimeout, UnknownCamera) as exc:
            self._failures.warning("no_frame", "timelapse: no frame of camera %s captured within "
                                   "%g s after a trigger (+%g s settle): %s; frame skipped (each "
                                   "further one counted in /status)", self.cam, self.frame_timeout_s,
                                   self.settle_s, exc)
            self.on_skip(trigger, "no_frame", str(exc))
            return
        except CamfabricError as exc:
            self._failures.warning("fabric", "timelapse: camera %s: %s; frame skipped", self.cam, exc)
            self.on_skip(trigger, "no_frame", str(exc))
            return
        finally:
            self._release()
        if self._failures.recovered("no_frame"):
            log.info("timelapse: camera %s delivers frames again", self.cam)
        if captured_locally_ns(frame) <= after_ns:  # the contract, checked where it is kept
            self.on_skip(trigger, "no_frame", "only a frame from before the trigger's moment came")
            return
        self.on_frame(trigger, frame)

    def _wait_until(self, due: float) -> bool:
        """Wait until monotonic `due`; True when stopping."""
        with self._cond:
            while not self._stopping:
                remaining = due - self.clock.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _release(self) -> None:
        try:
            self.subscriber.release(self.cam)
        except CamfabricError as exc:  # closed under us while stopping: nothing left to release
            log.debug("timelapse: camera %s not released: %s", self.cam, exc)


__all__ = ["ESTIMATE_MARGIN_S", "FrameRecorder"]
