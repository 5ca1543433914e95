"""The tracker process: subscribe to the cameras, detect at a bounded rate, publish the world.

    Subscriber (jpeg, newest frame per camera)
        │ poll
        ▼
    FrameIntake.offer(cam, now) ── no: dropped (too soon, or that camera still detecting)
        │ yes
        ▼
    CameraWorker[cam] (one thread per camera: one detection in flight per camera)
        │ CameraPipeline.process
        ▼
    WorldModel ──► Publisher: World on `world` whenever it changes and at least every second,
                              Status on `status/tracker/` every `status_interval_s`

The Gemini key and every other configuration problem is found in the constructor, before
any socket opens.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import requests
import zmq

from ...protocol import wire
from ...protocol.errors import CamfabricError
from ...protocol.publisher import Publisher
from ...protocol.subscriber import Subscriber
from .budget import RequestBudget
from .config import TrackerConfig
from .detectors.aruco import ArucoDetector, MarkerFinder
from .detectors.gemini import GeminiDetector
from .intake import FrameIntake
from .pipeline import CameraPipeline
from .world import WorldModel

SERVICE = "tracker"
WORLD_EVERY_S = 1.0


class CameraWorker:
    """A camera's detection thread with a one-frame mailbox (never a queue)."""

    def __init__(self, pipeline: CameraPipeline, intake: FrameIntake, clock: Callable[[], float],
                 log: logging.Logger) -> None:
        self.pipeline = pipeline
        self.intake = intake
        self.clock = clock
        self.log = log
        self._frame: wire.Frame | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"tracker-cam{pipeline.cam}", daemon=True)
        self._failures: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def hand(self, frame: wire.Frame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify()

    def request_stop(self) -> None:
        """Ask the thread to end after the frame it is on (a Gemini call may still be running)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        cam = int(self.pipeline.cam)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._frame is not None or self._stopping)
                if self._stopping:
                    return
                frame, self._frame = self._frame, None
            try:
                self.pipeline.process(frame.image, bytes(frame.data), self.clock())
            except Exception as exc:  # a bad frame must not end the camera's tracking
                kind = type(exc).__name__
                self.pipeline.last_error = f"{kind}: {exc}"
                if kind not in self._failures:
                    self._failures.add(kind)
                    self.log.exception("camera %d: detection failed (further %s are counted)", cam, kind)
            finally:
                self.intake.done(cam)


class Tracker:
    """The tracker service; `start()`, `stop()`, or use it as a context manager."""

    def __init__(self, config: TrackerConfig, *, context: zmq.Context | None = None,
                 session: requests.Session | None = None, clock: Callable[[], float] = time.time,
                 environ: Mapping[str, str] | None = None, log: logging.Logger | None = None) -> None:
        self.config = config
        self.context = context
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        api_key = config.gemini_key(environ)  # ConfigError naming the key path when missing
        labels = {int(k): v for k, v in config.markers.items()}
        g = config.gemini
        self.budget = RequestBudget(g.requests_per_minute, g.requests_per_day, backoff_s=g.backoff_s,
                                    max_backoff_s=g.max_backoff_s, log=self.log)
        self.world = WorldModel(config.world)
        self.intake = FrameIntake({c.id: c.interval_s for c in config.cameras})
        self.pipelines: dict[int, CameraPipeline] = {}
        for cam in config.cameras:
            if cam.detector == "gemini":
                detector: ArucoDetector | GeminiDetector = GeminiDetector(
                    g, api_key, self.budget, labels=cam.labels or sorted(set(labels.values())),
                    session=session, clock=clock)
            else:
                detector = ArucoDetector(labels)
            # One finder per camera: each camera detects on its own thread.
            finder = MarkerFinder(config.aruco_dictionary)
            self.pipelines[cam.id] = CameraPipeline(cam, self.world, finder, detector, log=self.log)
        self.workers = {cam: CameraWorker(p, self.intake, clock, self.log)
                        for cam, p in self.pipelines.items()}
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._roles_checked: set[int] = set()
        self._last_world = self._last_status = 0.0
        self._published_version = -1

    @property
    def endpoint(self) -> str:
        """Where the world model is published (the bound endpoint once started)."""
        return self.publisher.endpoint if self.publisher else self.config.publish

    def start(self) -> Tracker:
        """Bind the world endpoint, subscribe to the cameras, start the threads (once)."""
        if self._thread is not None:
            return self
        try:
            self.publisher = Publisher(self.config.publish, context=self.context, log=self.log).start()
        except zmq.ZMQError as exc:
            raise CamfabricError(f"cannot publish the world model on {self.config.publish}: {exc}") from exc
        try:
            self.subscriber = Subscriber(self.config.nodes, cameras=[c.id for c in self.config.cameras],
                                         encoding="jpeg", context=self.context, log=self.log).start()
        except (CamfabricError, zmq.ZMQError) as exc:
            self.publisher.stop()
            if isinstance(exc, CamfabricError):
                raise
            raise CamfabricError(f"cannot subscribe to {', '.join(self.config.nodes)}: {exc}") from exc
        for worker in self.workers.values():
            worker.start()
        self._thread = threading.Thread(target=self._run, name="tracker", daemon=True)
        self._thread.start()
        cams = ", ".join(f"{c.id} ({c.role}, {c.detector}, every {c.interval_s:g} s)"
                         for c in self.config.cameras)
        self.log.info("tracking cameras %s from %s; world on %s", cams, ", ".join(self.config.nodes),
                      self.endpoint)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for worker in self.workers.values():
            worker.request_stop()
        if self._thread is not None:
            self._thread.join(1.0)
        # A worker inside a slow Gemini call is a daemon thread: it is not waited for beyond this.
        deadline = time.monotonic() + 0.5
        for worker in self.workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.subscriber is not None:
            self.subscriber.close()
        if self.publisher is not None:
            self.publisher.stop()

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        """The state published on `status/tracker/` (the gateway shows it in /status)."""
        now = self.clock()
        cameras = {p.cam: p.status(self.intake.next_allowed(cam)) for cam, p in self.pipelines.items()}
        for cam, entry in cameras.items():
            counts = self.intake.counts[int(cam)]
            entry["frames_dropped"] = counts.too_soon + counts.busy
        state: dict[str, Any] = {"cameras": cameras, "objects": len(self.world), "updated": now}
        if any(c.detector == "gemini" for c in self.config.cameras):
            state["gemini"] = {"model": self.config.gemini.model, **self.budget.state(now)}
        return state

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        failures: set[str] = set()
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # the loop must outlive one bad step; each kind is logged once
                kind = traceback.format_exc().strip().splitlines()[-1]
                if kind not in failures:
                    failures.add(kind)
                    self.log.exception("tracker loop step failed (further ones of this kind are not logged)")
                self._stopping.wait(0.1)

    def _step(self) -> None:
        frame = self.subscriber.poll(timeout=0.1)
        now = self.clock()
        if frame is not None:
            self._check_role(frame.cam)
            if self.intake.offer(frame.cam, now):
                self.workers[frame.cam].hand(frame)
        self.world.expire(now)  # an object turning stale or removed changes the version
        if self.world.version != self._published_version or now - self._last_world >= WORLD_EVERY_S:
            self._published_version = self.world.version
            self._last_world = now
            self.publisher.publish(wire.World(model=self.world.snapshot(now), source=SERVICE))
        if now - self._last_status >= self.config.status_interval_s:
            self._last_status = now
            self.publisher.publish(wire.Status(service=SERVICE, state=self.status()))

    def _check_role(self, cam: int) -> None:
        """Warn once when the node's registry gives a camera another role than our config."""
        if cam in self._roles_checked:
            return
        meta = self.subscriber.meta(cam)
        if meta is None:
            return
        self._roles_checked.add(cam)
        role = str(meta.registry.get("role", ""))
        expected = self.pipelines[cam].config.role
        if role and role != expected:
            self.log.warning("camera %d is %r in its node's registry but tracked as %r: check "
                             "tracker.cameras (positions from it may be meaningless)", cam, role, expected)
