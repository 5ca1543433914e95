"""The tracker process: subscribe to the cameras, detect within the budget, publish the world.

    Subscriber (jpeg; a camera's frames subscribed only around its turn)
        │ newest fresh frame, taken when the camera is due
        ▼
    CameraWorker[cam] (one thread per camera: one detection in flight per camera)
        │ CameraPipeline.process ── CameraGate.reserve() at send time (RequestBudget)
        │ (the side camera, when due, takes its frame and the overhead camera's as one
        │  synchronised set: the overhead frame is detected first — free for ArUco, within the
        │  overhead gate for a paid detector — and the height measured at its x, y)
        ▼
    WorldModel ──► Publisher: World on `world` whenever it changes and at least every second,
                              Status on `status/tracker/` every `status_interval_s`

Gemini cameras share one `RequestBudget` whose state lives in a file under
`tracker.gemini.state_dir`, keyed by the API key's hash, so trackers of one host sharing a key
share its budget and a restart keeps it; ArUco cameras have an in-memory gate of their own.
The Gemini key and every other configuration problem is found in the constructor, before any
socket opens; the cameras' demand is checked against the budget there too (a warning saying
which intervals fit).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import zmq

from ...protocol import wire
from ...protocol.publisher import Publisher
from ...protocol.subscriber import Subscriber, captured_locally_ns
from ...protocol.sync import FrameSet
from ...runtime.backoff import Backoff
from ...runtime.clock import SYSTEM_CLOCK, Clock
from ...runtime.errors import CamfabricError
from ...runtime.logonce import LogOnce
from .budget import RequestBudget, demand_warnings
from .config import PAID_DETECTORS, TrackerConfig, default_state_dir
from .detectors.aruco import ArucoDetector, MarkerFinder
from .detectors.gemini import GeminiDetector
from .intake import CameraGate, CameraWorker
from .pipeline import CameraPipeline
from .world import WorldModel

SERVICE = "tracker"
WORLD_EVERY_S = 1.0
LOCAL_LATENCY_S = 0.5  # an ArUco detection, generously


class Tracker:
    """The tracker service; `start()`, `stop()`, or use it as a context manager."""

    def __init__(self, config: TrackerConfig, *, context: zmq.Context | None = None,
                 session: requests.Session | None = None, clock: Clock = SYSTEM_CLOCK,
                 environ: Mapping[str, str] | None = None, log: logging.Logger | None = None) -> None:
        self.config = config
        self.context = context
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        api_key = config.gemini_key(environ)  # ConfigError naming the key path when missing
        labels = {int(k): v for k, v in config.markers.items()}
        g = config.gemini
        self.budget = RequestBudget(
            per_minute=g.requests_per_minute, per_day=g.requests_per_day,
            path=self._state_path(api_key) if api_key else None, clock=clock,
            backoff=Backoff(base_s=g.backoff_s, cap_s=g.max_backoff_s), log=self.log)
        self.local_budget = RequestBudget(clock=clock, log=self.log)
        self.world = WorldModel(config.world)
        self.pipelines: dict[int, CameraPipeline] = {}
        self.gates: dict[int, CameraGate] = {}
        for cam in config.cameras:
            if cam.detector == "gemini":
                detector: ArucoDetector | GeminiDetector = GeminiDetector(
                    g, api_key, self.budget, labels=cam.labels or sorted(set(labels.values())),
                    session=session, clock=clock, log=self.log)
                # Keyed by where the camera comes from too: trackers of one host that watch the
                # same camera share its turns, those of another cell's camera 0 do not.
                source = "|".join(sorted(config.nodes))
                self.gates[cam.id] = CameraGate(self.budget, f"{cam.key}@{source}", cam.interval_s,
                                                g.timeout_s + 5.0)
            else:
                detector = ArucoDetector(labels)
                self.gates[cam.id] = CameraGate(self.local_budget, cam.key, cam.interval_s, 60.0)
            # One finder per camera: each camera detects on its own thread.
            finder = MarkerFinder(config.aruco_dictionary)
            self.pipelines[cam.id] = CameraPipeline(cam, self.world, finder, detector, log=self.log)
        paid = [c.interval_s for c in config.cameras if c.detector in PAID_DETECTORS]
        for warning in demand_warnings(paid, g.requests_per_minute, g.requests_per_day):
            self.log.warning("%s", warning)
        self._derive_world_times()
        self.workers: dict[int, CameraWorker] = {}
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._roles_checked: set[int] = set()
        self._last_world = self._last_status = -float("inf")
        self._published_version = -1

    def _state_path(self, api_key: str) -> Path:
        # The key's hash, never the key: the file name shows in logs and /status.
        digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
        return (self.config.gemini.state_dir or default_state_dir()) / f"gemini-{digest}.json"

    @property
    def endpoint(self) -> str:
        """Where the world model is published (the bound endpoint once started)."""
        return self.publisher.endpoint if self.publisher else self.config.publish

    def start(self) -> Tracker:
        """Join the shared budget, bind the world endpoint, subscribe, start the threads (once)."""
        if self._thread is not None:
            return self
        self.budget.open()  # BudgetError when another tracker of this key disagrees
        try:
            self.publisher = Publisher(self.config.publish, context=self.context, log=self.log).start()
        except zmq.ZMQError as exc:
            self.budget.close()
            raise CamfabricError(f"cannot publish the world model on {self.config.publish}: {exc}") from exc
        try:
            self.subscriber = Subscriber(
                self.config.nodes, cameras=[c.id for c in self.config.cameras], encoding="jpeg",
                context=self.context, log=self.log,
                clock=lambda: int(self.clock.monotonic() * 1e9)).start()
        except (CamfabricError, zmq.ZMQError) as exc:
            self.publisher.stop()
            self.budget.close()
            if isinstance(exc, CamfabricError):
                raise
            raise CamfabricError(f"cannot subscribe to {', '.join(self.config.nodes)}: {exc}") from exc
        overhead = next((c for c, p in self.pipelines.items() if p.config.role == "overhead"), None)
        for cam, pipeline in self.pipelines.items():
            partner = overhead if pipeline.config.role == "side_profile" else None
            worker = CameraWorker(cam, self.gates[cam], self.subscriber,
                                  lambda frame, p=pipeline, g=self.gates[cam]: self._detect(p, g, frame),
                                  clock=self.clock, log=self.log, partner=partner,
                                  process_pair=None if partner is None else
                                  lambda pair, c=cam, o=partner: self._detect_pair(c, o, pair))
            self.workers[cam] = worker
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
        deadline = self.clock.monotonic() + 0.5
        for worker in self.workers.values():
            worker.join(max(0.0, deadline - self.clock.monotonic()))
        if self.subscriber is not None:
            self.subscriber.close()
        if self.publisher is not None:
            self.publisher.stop()
        self.budget.close()

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        """The state published on `status/tracker/` (the gateway shows it in /status)."""
        now, wall = self.clock.monotonic(), self.clock.wall()
        cameras = {}
        for cam, p in self.pipelines.items():
            worker = self.workers.get(cam)
            wait = worker.last_wait_s if worker else 0.0
            cameras[p.cam] = p.status(wall + max(wait, p.retry_at - now, 0.0))
            cameras[p.cam]["frames_taken"] = worker.frames if worker else 0
            cameras[p.cam]["subscribed"] = worker.subscribed if worker else False
            if worker is not None and worker.partner is not None:
                spread = worker.last_spread_ms
                cameras[p.cam]["paired_with"] = str(worker.partner)
                cameras[p.cam]["pairs"] = worker.pairs
                cameras[p.cam]["unpaired"] = worker.unpaired
                cameras[p.cam]["last_pair_spread_ms"] = None if spread is None else round(spread, 2)
                cameras[p.cam]["last_unpaired"] = worker.last_unpaired
        state: dict[str, Any] = {"cameras": cameras, "objects": len(self.world), "updated": wall,
                                 "stale_s": round(self.world.stale_s, 3), "heights": dict(self.world.heights)}
        gemini = [p.detector for p in self.pipelines.values() if isinstance(p.detector, GeminiDetector)]
        if gemini:
            errors = [d.refused or d.last_error for d in gemini if d.refused or d.last_error]
            state["gemini"] = {"model": self.config.gemini.model, **self.budget.state(),
                               "latency_s": round(max(d.latency_s for d in gemini), 3),
                               "last_error": errors[0] if errors else ""}
        return state

    # -- the loop ----------------------------------------------------------------------------
    def _detect(self, pipeline: CameraPipeline, gate: CameraGate, frame: wire.Frame, *,
                extra: bool = False, paired: tuple[float, float] | None = None) -> None:
        seen = captured_locally_ns(frame) / 1e9
        pipeline.process(frame.image, bytes(frame.data), seen, frame.t_capture_ns / 1e9, gate,
                         extra=extra, paired=paired)

    def _detect_pair(self, side_cam: int, overhead_cam: int, pair: FrameSet) -> None:
        """A side frame and the overhead frame captured with it: place the objects in the
        overhead frame, then measure their heights at those places. With ArUco the overhead
        detection is free: an extra look that only places the objects for the heights. A paid
        detector sends it only when its own gate is open now, as its turn (else the heights are
        measured at interpolated places, and counted so)."""
        overhead, gate = self.pipelines[overhead_cam], self.gates[overhead_cam]
        frame = pair[overhead_cam]
        paired = None
        if overhead.free or gate.wait_s() <= 0:
            self._detect(overhead, gate, frame, extra=overhead.free)
            paired = (captured_locally_ns(frame) / 1e9, frame.t_capture_ns / 1e9)
        self._detect(self.pipelines[side_cam], self.gates[side_cam], pair[side_cam], paired=paired)

    def _derive_world_times(self) -> None:
        """`stale_s` (unless set): an object is stale once it missed two detections of the
        slowest workspace camera, counted at the rate the budget really allows, plus the
        detector's measured latency; `remove_s` (unless set) three times that, at least 30 s."""
        w = self.config.world
        n_paid = sum(1 for c in self.config.cameras if c.detector in PAID_DETECTORS)
        shared = n_paid * self.budget.spacing_s
        slowest = 0.0
        for p in self.pipelines.values():
            if p.config.role == "end_effector":
                continue
            interval = p.config.interval_s
            latency = LOCAL_LATENCY_S
            if isinstance(p.detector, GeminiDetector):
                interval = max(interval, shared)
                latency = p.detector.latency_s
            slowest = max(slowest, 2 * interval + latency)
        stale = w.stale_s if w.stale_s is not None else max(slowest, 3.0)
        self.world.stale_s = stale
        self.world.remove_s = w.remove_s if w.remove_s is not None else max(30.0, 3 * stale)

    def _run(self) -> None:
        failures = LogOnce(self.log)
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as exc:  # the loop must outlive one bad step; each kind is logged once
                failures.error(type(exc).__name__, "tracker loop step failed: %s (further ones of "
                               "this kind are not logged)", exc, exc_info=True)
            self._stopping.wait(0.1)

    def _step(self) -> None:
        now, wall = self.clock.monotonic(), self.clock.wall()
        self._check_roles()
        self._derive_world_times()  # the measured latency moves stale_s
        self.world.expire(now)  # an object turning stale or removed changes the version
        if self.world.version != self._published_version or now - self._last_world >= WORLD_EVERY_S:
            self._published_version = self.world.version
            self._last_world = now
            # Stamped with the reading `updated` carries: readers take (t_publish_ns - updated)
            # as the tracker's own wait, so both must come from one clock.
            wall_ns = int(wall * 1e9)
            world = wire.World(model=self.world.snapshot(now, wall_ns / 1e9), source=SERVICE)
            self.publisher.publish_parts(wire.encode(world, wall_ns))
        if now - self._last_status >= self.config.status_interval_s:
            self._last_status = now
            self.publisher.publish(wire.Status(service=SERVICE, state=self.status()))

    def _check_roles(self) -> None:
        """Warn once when a node's registry gives a camera another role than our config."""
        for cam, pipeline in self.pipelines.items():
            if cam in self._roles_checked:
                continue
            meta = self.subscriber.meta(cam)
            if meta is None:
                continue
            self._roles_checked.add(cam)
            role = str(meta.registry.get("role", ""))
            expected = pipeline.config.role
            if role and role != expected:
                self.log.warning("camera %d is %r in its node's registry but tracked as %r: check "
                                 "tracker.cameras (positions from it may be meaningless)", cam, role,
                                 expected)
