"""The capture node: owns its cameras and publishes them on one XPUB endpoint.

    node = CaptureNode(NodeConfig(cameras=demo_cameras()))
    with node:                       # start() ... stop()
        print(node.endpoint)

Threads: one capture thread per camera (`camera.CaptureLoop`), the publisher's socket owner,
a heartbeat that sends every camera's `meta/{cam}/` (registry + health) each `heartbeat_s`,
and a late-joiner thread that answers a new subscription at once with the newest capture in
the encoding asked for — but only a capture that is still fresh (a few frame intervals old)
from a camera that is connected: a late joiner is never handed a stale frame, it gets the
next capture instead. The publisher re-sends its own cached frames under the same bound, and
re-stamped, so every frame a late joiner receives carries its true age. The startup scan
(`scan/{node}/`) is published once, as soon as every camera has been probed; the publisher's
last-value cache keeps it for later subscribers.

Each start of the node is one *run*, named by a random id that every heartbeat (`health.run`)
and the scan (`run`) carry: a subscriber that sees a node's run change knows the node restarted
— its frames from before are history — and the new run's scan lists every camera it now has,
so a camera taken out of the config leaves the gateway within seconds of the restart.
Everything stops within 2 s: Events wake the loops, sources blocked in a read are interrupted,
sockets close with linger 0.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import zmq

from ..protocol.publisher import Publisher
from ..protocol.security import is_loopback_endpoint
from ..protocol.wire import Meta, Scan
from ..runtime.errors import CamfabricError
from ..runtime.threads import Background
from . import scan
from .camera import Backoff, CaptureLoop
from .config import CameraConfig, NodeConfig
from .source import ProbeReport, Source
from .sources import source_module

SCAN_DEADLINE_S = 10.0  # publish the scan by then even if a camera is still probing
REPLAY_FRAME_INTERVALS = 3  # a capture older than this many frame intervals is not replayed
REPLAY_SLACK_S = 0.1  # ... plus this, for the encode between capture and publish
REPLAY_QUEUE = 64


def create_source(camera: CameraConfig) -> Source:
    """The source a camera's config describes (not opened yet)."""
    return source_module(camera.kind).create(camera.options, camera)


class CaptureNode(Background):
    """A node of the fabric: one capture thread per camera, one publisher, a heartbeat.

    `sources` replaces the source of the given camera ids (e.g. a camera reached some other
    way); the others are built from their config. `backoff` sets how failed sources are retried;
    the scan goes out after `scan_deadline_s` even if a camera is still being probed.
    """

    def __init__(
        self,
        config: NodeConfig,
        context: zmq.Context | None = None,
        *,
        sources: Mapping[int, Source] | None = None,
        backoff: Backoff | None = None,
        scan_deadline_s: float = SCAN_DEADLINE_S,
        log: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.scan_deadline_s = scan_deadline_s
        self.context = context or zmq.Context.instance()
        self.log = log or logging.getLogger(__name__)
        self.backoff = backoff or Backoff()
        self.run = uuid.uuid4().hex  # this start of the node (see the module docstring)
        given = dict(sources or {})
        self.sources: dict[int, Source] = {
            camera.id: given[camera.id] if camera.id in given else create_source(camera)
            for camera in config.cameras
        }
        self.publisher: Publisher | None = None
        self.loops: dict[int, CaptureLoop] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._replays: queue.Queue[bytes | None] = queue.Queue(maxsize=REPLAY_QUEUE)
        self._replay_bounds = {camera.id: REPLAY_FRAME_INTERVALS / camera.fps + REPLAY_SLACK_S
                               for camera in config.cameras}
        self.replays_skipped = 0  # late joiners not answered with a stale capture
        self._probes: dict[int, ProbeReport] = {}
        self._probes_lock = threading.Lock()
        self._scan_published = threading.Event()
        self._started_at = 0.0
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> CaptureNode:
        """Bind the publisher and start every thread; raises CamfabricError if it cannot bind."""
        cfg = self.config
        if cfg.insecure:
            self.log.warning(
                "node %s publishes on %s WITHOUT encryption or authentication (insecure = true): "
                "anyone who can reach it can watch every camera", cfg.name, cfg.publish)
        self.publisher = Publisher(
            cfg.publish, context=self.context, curve=cfg.curve.server() if cfg.curve else None,
            insecure=cfg.insecure, on_subscribe=self._on_subscribe,
            replay_max_age_s=self._replay_bound,
            log=logging.getLogger(f"{__name__}.publisher"),
        )
        try:
            self.publisher.start()
        except zmq.ZMQError as exc:
            raise CamfabricError(f"node {cfg.name} cannot publish on {cfg.publish}: {exc}") from exc
        self._started_at = time.monotonic()
        for camera in cfg.cameras:
            self.loops[camera.id] = CaptureLoop(
                camera, self.sources[camera.id], self.publisher, node=cfg.name,
                jpeg_quality=cfg.jpeg_quality, backoff=self.backoff, on_probe=self._on_probe,
            )
        self._spawn(self._replay_loop, "camfabric-late-joiner")
        for loop in self.loops.values():
            loop.start()
        self._spawn(self._heartbeat_loop, "camfabric-heartbeat")
        if not cfg.cameras:
            self._publish_scan()
        secure = "CURVE" if cfg.curve else ("insecure" if not is_loopback_endpoint(cfg.publish)
                                            else "loopback")
        self.log.info("node %s publishing on %s (%s), %d camera(s)", cfg.name, self.endpoint,
                      secure, len(cfg.cameras))
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every thread and close the publisher, all within `timeout` seconds."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self._stop.set()
        try:
            self._replays.put_nowait(None)
        except queue.Full:
            pass  # the late-joiner thread sees _stop after its current item
        for loop in self.loops.values():
            loop.request_stop()
        stuck = [f"camera {cam}" for cam, loop in self.loops.items()
                 if not loop.join(max(0.0, deadline - time.monotonic() - 0.3))]
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic() - 0.2))
            if thread.is_alive():
                stuck.append(thread.name)
        if self.publisher is not None:
            self.publisher.stop(max(0.05, deadline - time.monotonic()))
        if stuck:
            self.log.warning("node %s stopped, leaving %s still running (a source that ignores "
                             "interrupt?)", self.config.name, ", ".join(stuck))
        else:
            self.log.info("node %s stopped", self.config.name)

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (a wildcard port resolved), or the configured one."""
        return self.publisher.endpoint if self.publisher is not None else self.config.publish

    # -- what the heartbeat says -------------------------------------------------------------
    def registry(self, camera: CameraConfig) -> dict[str, Any]:
        """The camera's registry entry, as the gateway's /cameras shows it."""
        w, h = camera.output_size
        return {
            "id": camera.id,
            "device": camera.device or self.sources[camera.id].device,
            "name": camera.name,
            "role": camera.role,
            "mount": camera.mount,
            "resolution": [w, h],
            "fov_deg": camera.fov_deg,
            "description": camera.description,
        }

    def health(self, cam: int) -> dict[str, Any]:
        """The camera's health as its next heartbeat will carry it."""
        health = self.loops[cam].health()
        health["source"] = self.sources[cam].kind or health["source"]
        health["frame_id"] = self.loops[cam].camera.frame_id
        health["run"] = self.run
        return health

    def publish_heartbeat(self) -> None:
        """Send every camera's meta message now."""
        for camera in self.config.cameras:
            meta = Meta(cam=camera.id, node=self.config.name, registry=self.registry(camera),
                        health=self.health(camera.id))
            self.publisher.publish(meta)

    # -- threads -----------------------------------------------------------------------------
    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _heartbeat_loop(self) -> None:
        while True:
            try:
                self.publish_heartbeat()
            except Exception:
                self.log.exception("node %s: heartbeat failed", self.config.name)
            if (not self._scan_published.is_set()
                    and time.monotonic() - self._started_at > self.scan_deadline_s):
                self._publish_scan()
            if self._stop.wait(self.config.heartbeat_s):
                return

    def _replay_bound(self, topic: bytes) -> float:
        """Seconds since capture a frame of `topic` may be replayed to a late joiner."""
        try:
            cam = int(topic.split(b"/")[1])
        except (IndexError, ValueError):
            return REPLAY_SLACK_S
        return self._replay_bounds.get(cam, REPLAY_SLACK_S)

    def _on_subscribe(self, prefix: bytes) -> None:
        # Runs on the publisher's socket thread: hand off, never encode here.
        if prefix.startswith(b"frame/") or b"frame/".startswith(prefix):
            try:
                self._replays.put_nowait(prefix)
            except queue.Full:  # a flood of subscriptions: those joiners get the next capture
                self.replays_skipped += 1

    def fresh_capture(self, cam: int) -> bool:
        """True when camera `cam` is connected and its newest capture is young enough to hand
        to a late joiner (a few frame intervals, on this host's clock)."""
        loop = self.loops[cam]
        if not loop.connected:
            return False
        captured = loop.health()["last_capture_ns"]
        age_s = (time.time_ns() - captured) / 1e9
        return captured > 0 and 0 <= age_s <= self._replay_bounds[cam]

    def _replay_loop(self) -> None:
        while True:
            prefix = self._replays.get()
            if prefix is None or self._stop.is_set():
                return
            for cam, loop in self.loops.items():
                try:
                    if not any(topic.startswith(prefix) for topic in loop.topics.values()):
                        continue
                    if not self.fresh_capture(cam):
                        self.replays_skipped += 1
                        continue
                    loop.replay(prefix)
                except Exception:
                    self.log.exception("camera %s: replay for a late joiner failed", loop.camera.id)

    def _on_probe(self, cam: int, report: ProbeReport) -> None:
        with self._probes_lock:
            self._probes[cam] = report
            complete = len(self._probes) == len(self.config.cameras)
        if report.opened:
            self.log.info("camera %s probed: %s opened, first frame in %s ms", cam, report.device,
                          None if report.first_frame_ms is None else round(report.first_frame_ms))
        else:
            self.log.warning("camera %s probe: %s did not open: %s", cam, report.device, report.error)
        if complete:
            self._publish_scan()

    def _publish_scan(self) -> None:
        with self._probes_lock:
            if self._scan_published.is_set():
                return
            self._scan_published.set()
            cameras = {c.id: (c, self._probes.get(c.id)) for c in self.config.cameras}
        report = scan.scan_report(self.config.name, cameras) | {"run": self.run}
        self.publisher.publish(Scan(node=self.config.name, report=report))

    @property
    def scan_report(self) -> dict[str, Any] | None:
        """The probes gathered so far, as the scan message carries them (None before the scan)."""
        if not self._scan_published.is_set():
            return None
        with self._probes_lock:
            cameras = {c.id: (c, self._probes.get(c.id)) for c in self.config.cameras}
        return scan.scan_report(self.config.name, cameras) | {"run": self.run}
