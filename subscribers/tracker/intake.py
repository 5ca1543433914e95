"""Frame intake: when a camera's frame is taken for detection, and from where.

Each camera has one worker thread and one gate. The gate is checked at *send time*: a
detection (for Gemini: the HTTP request) starts only when `CameraGate.reserve()` says so —
`interval_s` after the camera's previous request left, never while it is in flight, within the
shared budget (see `budget`). Frame arrival decides nothing: the worker waits until its camera
is due, takes the newest frame captured after that moment (so nothing stale is detected as
fresh), and hands it to the pipeline.

The worker subscribes to its camera's frames only for its turn — from the moment the camera is
due until the first fresh frame is in hand, and lets go *before* detecting (a Gemini request
takes seconds) — so a node encodes one frame, at most two (one captured while the
unsubscription travels), per camera per interval for the tracker, not its full frame rate. The
price is at most one frame interval between due and detection: the next capture after the
subscription reaches the node.

    wait_s > 0 ── unsubscribed, sleep ──────────────────────────────┐
    due ── subscribed ── first fresh frame ── unsubscribed ── pipeline.process(frame, gate)
                                                               └─ gate.reserve() … done()

A camera with a `partner` (the side camera, whose height is measured at the overhead camera's
x, y) subscribes the partner's frames too around its own turn, and when due takes the two as one
synchronised set (`Subscriber.synced([partner, cam])`: captured within half the slower camera's
frame interval, both fresh) and hands the pair on (`process_pair`). When no set forms within
`PAIR_WAIT_S` it falls back to its own newest fresh frame alone — logged once until a pair
forms again, and counted (`unpaired`, the reason in `last_unpaired`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ...protocol import topics, wire
from ...protocol.subscriber import FrameTimeout, Subscriber
from ...protocol.sync import FrameSet, SyncTimeout
from ...runtime.clock import SYSTEM_CLOCK, Clock
from ...runtime.errors import CamfabricError
from ...runtime.logonce import LogOnce
from .budget import RequestBudget

FRESH_S = 1.0  # a frame captured longer ago than this before the camera was due is not taken
POLL_S = 0.25  # longest sleep between two looks at the gate (another process may change it)
PAIR_WAIT_S = 1.0  # how long a due camera waits for a synchronised set with its partner


@dataclass(frozen=True, slots=True)
class CameraGate:
    """One camera's handle on the budget: its interval and how long a request may be in flight."""

    budget: RequestBudget
    cam: str
    interval_s: float
    in_flight_s: float

    def wait_s(self) -> float:
        return self.budget.wait_s(self.cam, self.interval_s)

    def reserve(self) -> float:
        """0.0: go now (and call `done()` when finished); else seconds to wait."""
        return self.budget.reserve(self.cam, self.interval_s, self.in_flight_s)

    def done(self) -> None:
        self.budget.done(self.cam)


class CameraWorker:
    """A camera's detection thread: wait for the gate, take a fresh frame, detect."""

    def __init__(self, cam: int, gate: CameraGate, subscriber: Subscriber,
                 process: Callable[[wire.Frame], object], *, clock: Clock = SYSTEM_CLOCK,
                 log: logging.Logger | None = None, partner: int | None = None,
                 process_pair: Callable[[FrameSet], object] | None = None) -> None:
        if (partner is None) != (process_pair is None):
            raise CamfabricError("a camera worker takes a partner camera together with process_pair")
        self.cam = cam
        self.gate = gate
        self.subscriber = subscriber
        self.process = process
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self.subscribed = True  # the Subscriber starts with every camera's frames subscribed
        self.partner = partner
        self.process_pair = process_pair
        self.partner_subscribed = False  # the partner's own worker holds its own subscription
        self.pairs = 0
        self.unpaired = 0
        self.last_spread_ms: float | None = None
        self.last_unpaired = ""
        self.frames = 0
        self.last_wait_s = 0.0
        self._stop = threading.Event()
        self._failures = LogOnce(self.log)
        self._pairing = LogOnce(self.log)
        self._last: wire.Frame | None = None
        self._last_pair: FrameSet | None = None
        self._thread = threading.Thread(target=self._run, name=f"tracker-cam{cam}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end (a detection in progress finishes first)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # a bad frame or a broken state file must not end tracking
                self._failures.error(type(exc).__name__, "camera %d: detection step failed: %s "
                                     "(further ones of this kind are not logged)", self.cam, exc,
                                     exc_info=not isinstance(exc, CamfabricError))
                self._stop.wait(1.0)

    def _step(self) -> None:
        wait = self.gate.wait_s()
        self.last_wait_s = wait
        self._follow(wait <= 0)
        if wait > 0:
            self._stop.wait(min(wait, POLL_S))
            return
        due_ns = int(self.clock.monotonic() * 1e9)
        if self.partner is not None and self._take_pair():
            return
        try:
            frame = self.subscriber.latest(self.cam, timeout=POLL_S, newer_than=self._last,
                                           captured_after_ns=due_ns - int(FRESH_S * 1e9))
        except FrameTimeout:
            return  # the camera delivers nothing fresh: nothing is sent
        self._follow(False)  # the frame is in hand: the node need not encode another
        self._last = frame
        self._detected(lambda: self.process(frame))

    def _detected(self, detect: Callable[[], object]) -> None:
        self.frames += 1
        detect()
        if self._failures.recovered():
            self.log.info("camera %d: detection works again", self.cam)

    def _take_pair(self) -> bool:
        """Detect on a synchronised set of the partner's frame and ours; False when none formed
        in time (the caller falls back to our frame alone)."""
        assert self.partner is not None and self.process_pair is not None
        try:
            pair = self.subscriber.synced([self.partner, self.cam], timeout=PAIR_WAIT_S,
                                          newer_than=self._last_pair, max_age_ms=FRESH_S * 1e3)
        except SyncTimeout as exc:
            self.unpaired += 1
            self.last_unpaired = str(exc)
            self._pairing.warning("unpaired", "camera %d: no frame of camera %d captured together "
                                  "with its own (%s); its height is measured where camera %d's "
                                  "sightings put the object at its capture time, interpolated, "
                                  "until a pair forms again", self.cam, self.partner, exc, self.partner)
            return False
        if self._pairing.recovered():
            self.log.info("camera %d: frames captured together with camera %d again", self.cam,
                          self.partner)
        self._follow(False)
        self._last_pair = pair
        self._last = pair[self.cam]
        self.pairs += 1
        self.last_spread_ms = pair.spread_ns / 1e6
        process_pair = self.process_pair
        self._detected(lambda: process_pair(pair))
        return True

    def _follow(self, want: bool) -> None:
        """Subscribe to the camera's frames (and its partner's) only for its turn. The
        partner's worker holds a subscription of its own: subscriptions are counted."""
        if want != self.subscribed:
            self._subscribe(self.cam, want)
            self.subscribed = want
        if self.partner is not None and want != self.partner_subscribed:
            self._subscribe(self.partner, want)
            self.partner_subscribed = want

    def _subscribe(self, cam: int, want: bool) -> None:
        topic = topics.frame(cam, "jpeg")
        if want:
            self.subscriber.subscribe(topic)
        else:
            self.subscriber.unsubscribe(topic)
