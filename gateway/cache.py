"""FrameCache: the gateway's view of the fabric — newest JPEG, heartbeat and owner per camera.

Topics are bound to the endpoints configured for them: one `protocol.Subscriber` on the
nodes (or proxies) takes frames, heartbeats (`meta/`, which discover the cameras) and `scan/`;
one on the tracker's endpoints takes `world` and `status/`; one on the other services'
endpoints takes `status/` only. A process that binds a service's port can therefore never
publish a camera. Per camera the cache keeps

- the nodes claiming it, each with its newest heartbeat (`Meta`);
- the *owner*: the node whose frames are served — the one configured for the camera in
  `owners` when given, else the first to announce it. Two nodes announcing the same camera id
  is a configuration mistake; it is logged (once per change) and shown in `/status`, and only
  the owner's frames are served — the two streams are never merged;
- the owner's newest JPEG frame and the rate frames arrive at. The frame keeps its JPEG as
  `bytes`, copied out of the ZeroMQ message once on arrival, so that every `/latest` response
  hands those same bytes to the server instead of copying them per request.

The cache follows the cameras through their heartbeats (`meta/`) only. A camera's JPEG is
subscribed on demand — while HTTP clients want it — and unsubscribed after `idle_s` (default
10 s) without a request, so a node with a gateway but nobody watching encodes nothing. The
snapshot and stream methods (`latest`, `snap`, `wait_newer`) count as wanting the camera; a
resource that serves a camera some other way calls `want(cam)` per request, or holds
`with cache.watching(cam):` for a long response. The first request after an idle period
waits (up to `wake_timeout_s`) for a fresh frame: the node answers a new subscriber at once.

A node's restart is the truth at once: every heartbeat and scan carries the node's *run* (a
random id per start). When a node's run changes, its cameras' frames from before are dropped —
never served after the restart — and its new run's scan (`scan/{node}/`, the cameras it now
has) removes every camera it no longer announces from `/cameras`, `/status` and `/metrics`
(the camera leaves entirely once no node claims it).

A camera is connected while its owner's heartbeat is younger than `heartbeat_timeout_s`; a
watchdog thread notices the transitions and logs them. The number of cameras is capped, per
node and in total: heartbeats for cameras beyond the caps are logged once and ignored. Time
comes from an injected monotonic clock (the same one the subscriber stamps `t_receive_ns`
with), so tests can drive `check()`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import zmq

from ..protocol import topics, wire
from ..protocol.errors import FrameTimeout, UnknownCamera
from ..protocol.security import CurveClient
from ..protocol.subscriber import Subscriber
from ..runtime.logonce import LogOnce
from ..runtime.threads import Background, Ready, start_thread

EXTRA_TOPICS = (topics.SCAN.encode(),)
TRACKER_TOPICS = (topics.WORLD.encode(), topics.STATUS.encode())
SERVICE_TOPICS = (topics.STATUS.encode(),)
MAX_CAMERAS = 256
MAX_CAMERAS_PER_NODE = 64
WATCHDOG_INTERVAL_S = 0.25
# A service (uploader, tracker) re-publishes its state every few seconds; silent this long, its
# last state is still shown, marked as no longer reported.
SERVICE_SILENT_S = 10.0
FPS_SMOOTHING = 0.2
# Requests waiting for a camera's next frame (/snap, /frame, a stale snapshot) hold a serving
# thread each: at most this many per camera and in all wait, the others are turned away at once
# (TooManyWaiting: 503 + Retry-After), so a stalled camera cannot take every thread from /latest.
MAX_SNAP_WAITERS = 4
MAX_SNAP_WAITERS_TOTAL = 6
ENDED_RUNS = 8  # a node's earlier runs remembered, so their late messages are known as history
DEFAULT_IDLE_S = 10.0  # a camera's JPEG stays subscribed this long after the last request
DEFAULT_WAKE_TIMEOUT_S = 1.0  # the first request after idle waits this long for a fresh frame


class TooManyWaiting(FrameTimeout):
    """A request for a fresh frame turned away: enough requests already wait for one."""


@dataclass
class CameraState:
    """What the cache knows of one camera; mutated only under the cache's lock."""

    cam: int
    claims: dict[str, wire.Meta] = field(default_factory=dict)
    # Last message of any kind from each claiming node: frames prove a node alive as well as
    # heartbeats do, so a heartbeat lost to a full receive queue under load is no disconnect.
    heard: dict[str, int] = field(default_factory=dict)
    owner: str = ""
    frame: wire.Frame | None = None
    connected: bool = False
    fps: float = 0.0
    frames: int = 0
    ignored_frames: int = 0
    conflict: tuple[str, ...] = ()

    @property
    def meta(self) -> wire.Meta | None:
        return self.claims.get(self.owner)


@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera as a request sees it now: its newest frame, whether its node is heard from,
    whether it is connected (node heard from and its camera up), and its last error."""

    cam: int
    frame: wire.Frame | None
    node_alive: bool
    connected: bool
    last_error: str | None


class FrameCache(Background):
    """Newest frame, heartbeat and owner of every camera on the fabric, plus world/scan/status."""

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        heartbeat_timeout_s: float = 3.0,
        context: zmq.Context | None = None,
        curve: Mapping[str, CurveClient] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        log: logging.Logger | None = None,
        watchdog: bool = True,
        idle_s: float = DEFAULT_IDLE_S,
        wake_timeout_s: float = DEFAULT_WAKE_TIMEOUT_S,
        tracker: Iterable[str] = (),
        services: Iterable[str] = (),
        owners: Mapping[int, str] | None = None,
        max_cameras: int = MAX_CAMERAS,
        max_cameras_per_node: int = MAX_CAMERAS_PER_NODE,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.heartbeat_timeout_ns = int(heartbeat_timeout_s * 1e9)
        self.wake_timeout_s = wake_timeout_s
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self.owners = {int(cam): node for cam, node in (owners or {}).items()}
        self.max_cameras = max_cameras
        self.max_cameras_per_node = max_cameras_per_node
        self.ignored_cameras = 0
        self._refusals = LogOnce(self.log)
        keys = dict(curve) if curve else None
        self.subscriber = Subscriber(
            self.endpoints, cameras=None, encoding="jpeg", topics_extra=EXTRA_TOPICS,
            on_demand=True, idle_s=idle_s, context=context, curve=keys, clock=clock, log=self.log,
        )
        self.subscriber.add_listener(self._on_message)
        # cameras=(): these endpoints are never asked for frames or heartbeats at all.
        tracker, services = list(tracker), list(services)
        self.tracker = Subscriber(
            tracker, cameras=(), topics_extra=TRACKER_TOPICS, context=context, curve=keys,
            clock=clock, log=self.log) if tracker else None
        self.services = Subscriber(
            services, cameras=(), topics_extra=SERVICE_TOPICS, context=context, curve=keys,
            clock=clock, log=self.log) if services else None
        self._cameras: dict[int, CameraState] = {}
        self._runs: dict[str, str] = {}  # node -> the run its newest heartbeat or scan named
        self._ended: dict[str, collections.deque[str]] = {}  # node -> its runs before that
        self._woken: dict[int, int] = {}  # camera -> when its JPEG was last subscribed (clock)
        self._waiting: collections.Counter[int] = collections.Counter()  # snap() waits per camera
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._watchdog_enabled = watchdog
        self._watchdog: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FrameCache:
        """Connect to the fabric and start the watchdog."""
        self.subscriber.start()
        for sub in self._service_subscribers:
            sub.start()
        if self._watchdog_enabled:
            self._watchdog = start_thread(self._watch, name="camfabric-gateway-watchdog")
        return self

    def close(self) -> None:
        """Stop the watchdog and the subscriber; wakes every waiting stream."""
        self._stop.set()
        self.subscriber.close()
        for sub in self._service_subscribers:
            sub.close()
        if self._watchdog is not None:
            self._watchdog.join(2.0)
        with self._changed:
            self._changed.notify_all()

    stop = close  # what leaving a `with` block calls

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    @property
    def _service_subscribers(self) -> list[Subscriber]:
        return [sub for sub in (self.tracker, self.services) if sub is not None]

    # -- the receive side (subscriber thread) ------------------------------------------------
    def _on_message(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Frame):
            self._on_frame(msg)
        elif isinstance(msg, wire.Meta):
            self._on_meta(msg)
        elif isinstance(msg, wire.Scan):
            self._on_scan(msg)

    def _on_scan(self, scan: wire.Scan) -> None:
        """The node's cameras are those its scan lists: any other it claimed is dropped."""
        listed = scan.report.get("cameras")
        if not isinstance(listed, Mapping):
            return
        has = {int(key) for key in listed if isinstance(key, str) and key.isdigit()}
        with self._changed:
            if not self._note_run(scan.node, scan.report.get("run")):
                return
            for cam, state in list(self._cameras.items()):
                if cam in has or scan.node not in state.claims:
                    continue
                del state.claims[scan.node]
                state.heard.pop(scan.node, None)
                if not state.claims:
                    del self._cameras[cam]
                    self.log.info("camera %d removed: node %r no longer has it", cam, scan.node)
                    continue
                if state.owner == scan.node:
                    state.frame, state.fps = None, 0.0
                self._update(state, self.clock())
            self._changed.notify_all()

    def _note_run(self, node: str, run: object) -> bool:
        """Remember `node`'s run; on a new one, drop its frames from before. False for a
        message of a run that has ended (still in flight when the node restarted): it is
        history and is dropped (lock held)."""
        if not isinstance(run, str) or not run:
            return True
        before = self._runs.get(node)
        if before == run:
            return True
        if run in self._ended.get(node, ()):
            return False
        if before is None and len(self._runs) >= self.max_cameras:
            return True  # as many nodes as cameras: a flood of made-up names is not remembered
        self._runs[node] = run
        if before is None:
            return True
        self._ended.setdefault(node, collections.deque(maxlen=ENDED_RUNS)).append(before)
        self.log.info("node %r restarted: its frames from before the restart are not served", node)
        for state in self._cameras.values():
            if state.owner == node:
                state.frame, state.fps = None, 0.0
        return True

    def _on_meta(self, meta: wire.Meta) -> None:
        with self._changed:
            if not self._note_run(meta.node, meta.health.get("run")):
                return
            state = self._cameras.get(meta.cam)
            if state is None:
                if not self._admit(meta):
                    return
                state = self._cameras[meta.cam] = CameraState(
                    meta.cam, owner=self.owners.get(meta.cam, meta.node))
                self.log.info("camera %d announced by node %r", meta.cam, meta.node)
            elif meta.node not in state.claims and not self._admit(meta):
                return
            state.claims[meta.node] = meta
            state.heard[meta.node] = max(state.heard.get(meta.node, 0), meta.t_receive_ns)
            self._update(state, meta.t_receive_ns)
            self._changed.notify_all()

    def _on_frame(self, frame: wire.Frame) -> None:
        if not isinstance(frame.data, bytes):
            frame = replace(frame, data=bytes(frame.data))
        with self._changed:
            state = self._cameras.get(frame.cam)
            if state is not None and frame.node in state.claims:
                state.heard[frame.node] = max(state.heard.get(frame.node, 0), frame.t_receive_ns)
            if state is None or frame.node != state.owner:
                if state is not None:
                    state.ignored_frames += 1
                return
            prev = state.frame
            if prev is not None and frame.t_receive_ns > prev.t_receive_ns:
                rate = 1e9 / (frame.t_receive_ns - prev.t_receive_ns)
                state.fps = rate if state.fps == 0 else state.fps + FPS_SMOOTHING * (rate - state.fps)
            state.frame = frame
            state.frames += 1
            self._changed.notify_all()

    def _admit(self, meta: wire.Meta) -> bool:
        """Whether a camera (or a second claim on one) fits the caps (lock held)."""
        if meta.cam not in self._cameras and len(self._cameras) >= self.max_cameras:
            self.ignored_cameras += 1
            self._refusals.warning("cameras.total", "ignoring camera %d from node %r: already "
                                   "%d cameras, the most this gateway keeps (further ones are "
                                   "only counted)", meta.cam, meta.node, self.max_cameras)
            return False
        claimed = sum(meta.node in state.claims for state in self._cameras.values())
        if claimed >= self.max_cameras_per_node:
            self.ignored_cameras += 1
            self._refusals.warning(f"cameras.node.{meta.node[:64]}", "ignoring camera %d of node "
                                   "%r: it already announced %d cameras, the most one node may "
                                   "(further ones are only counted)", meta.cam, meta.node,
                                   self.max_cameras_per_node)
            return False
        return True

    # -- liveness and ownership --------------------------------------------------------------
    def _alive(self, state: CameraState, now: int) -> list[str]:
        return [node for node in state.claims
                if now - state.heard.get(node, 0) < self.heartbeat_timeout_ns]

    def _update(self, state: CameraState, now: int) -> None:
        """Recompute owner, connection and conflict of one camera (lock held)."""
        alive = self._alive(state, now)
        configured = self.owners.get(state.cam)
        if configured is not None:
            if state.owner != configured:  # never served in its place, even while it is away
                state.owner, state.frame, state.fps = configured, None, 0.0
        elif state.owner not in alive and alive:
            newest = max(alive, key=lambda node: state.heard[node])
            self.log.warning("camera %d: node %r stopped sending heartbeats; serving node %r now",
                             state.cam, state.owner, newest)
            state.owner, state.frame, state.fps = newest, None, 0.0
        connected = state.owner in alive
        if connected != state.connected:
            state.connected = connected
            if connected:
                self.log.info("camera %d (node %r) connected", state.cam, state.owner)
            else:
                self.log.warning("camera %d (node %r) disconnected: nothing heard from its node for %.1f s",
                                 state.cam, state.owner, self.heartbeat_timeout_ns / 1e9)
        conflict = tuple(sorted(alive)) if len(alive) > 1 else ()
        if conflict != state.conflict:
            if conflict:
                self.log.error("camera %d is claimed by %d nodes (%s); serving only node %r's "
                               "frames — give each camera a unique id", state.cam, len(conflict),
                               ", ".join(conflict), state.owner)
            else:
                self.log.warning("camera %d: only node %r claims it now", state.cam, state.owner)
            state.conflict = conflict

    def check(self, now_ns: int | None = None) -> None:
        """Re-evaluate every camera's liveness at `now_ns` (this host's monotonic clock)."""
        now = self.clock() if now_ns is None else now_ns
        with self._changed:
            for state in self._cameras.values():
                self._update(state, now)

    def _watch(self, ready: Ready) -> None:
        ready.set()
        while not self._stop.wait(WATCHDOG_INTERVAL_S):
            self.check()

    # -- reading -----------------------------------------------------------------------------
    def camera_ids(self) -> list[int]:
        with self._changed:
            return sorted(self._cameras)

    def require(self, cam: int) -> None:
        """Raise UnknownCamera (naming the announced cameras) unless some node announced `cam`."""
        with self._changed:
            if cam not in self._cameras:
                raise UnknownCamera(cam, self._cameras.keys())

    # -- demand: which cameras' JPEG the fabric must deliver ---------------------------------
    def want(self, cam: int) -> bool:
        """Note that a client wants `cam`'s frames now: subscribes its JPEG if it is not, and
        keeps it subscribed for `idle_s` more seconds. True when this call subscribed it (the
        cached frame, if any, is from before: a fresh one is on its way)."""
        self.require(cam)
        return self.subscriber.want(cam)

    @contextlib.contextmanager
    def watching(self, cam: int) -> Iterator[FrameCache]:
        """Keep `cam`'s JPEG subscribed for the block (e.g. one MJPEG response)."""
        self.require(cam)
        with self.subscriber.watching(cam):
            yield self

    def wanted(self) -> list[int]:
        """The cameras whose JPEG is subscribed right now."""
        return sorted(cam for cam, _ in self.subscriber.subscribed())

    def latest(self, cam: int, wake_timeout_s: float | None = None) -> wire.Frame | None:
        """The owner's newest frame of `cam` (None before the first); UnknownCamera if unannounced.

        Counts as wanting the camera. While the cached frame is from before the camera was last
        subscribed (after an idle time, or none yet) — for the request that subscribed it and
        for every other one that comes before the first fresh frame — this waits up to
        `wake_timeout_s` (default the cache's) for a fresh one and returns the newest it has
        then, always with its true age. A camera whose node is not heard from answers at once."""
        before = self._frame_of(cam)
        if self.want(cam):
            self._woken[cam] = self.clock()
        from_before = before is None or before.t_receive_ns < self._woken.get(cam, 0)
        if from_before and self._connected(cam):
            timeout = self.wake_timeout_s if wake_timeout_s is None else wake_timeout_s
            return self.wait_newer(cam, before, timeout) or self._frame_of(cam)
        return self._frame_of(cam)

    def _frame_of(self, cam: int) -> wire.Frame | None:
        with self._changed:
            state = self._cameras.get(cam)
            if state is None:
                raise UnknownCamera(cam, self._cameras.keys())
            return state.frame

    def _connected(self, cam: int) -> bool:
        with self._changed:
            state = self._cameras[cam]
            meta = state.meta
            return state.connected and (meta is None or meta.health.get("connected") is not False)

    def view(self, cam: int) -> CameraView:
        """`cam`'s newest frame, connection and last error, evaluated now; UnknownCamera if
        unannounced. A node that went silent is named as the error."""
        self.require(cam)
        with self._changed:
            state = self._cameras[cam]
            self._update(state, self.clock())
            health = state.meta.health if state.meta else {}
            error = health.get("last_error")
            if not state.connected:
                error = (f"nothing heard from node {state.owner!r} for more than "
                         f"{self.heartbeat_timeout_ns / 1e9:g} s")
            # The newest evidence wins: a frame the heartbeat did not know of yet (a higher
            # seq; without one, a later arrival) shows a camera reported down up again.
            frame = state.frame
            seq = health.get("seq")
            if frame is None or state.meta is None:
                newer = False
            elif isinstance(seq, int) and not isinstance(seq, bool):
                newer = frame.seq > seq
            else:
                newer = frame.t_receive_ns > state.meta.t_receive_ns
            connected = state.connected and not (health.get("connected", True) is False and not newer)
            return CameraView(cam, state.frame, state.connected, connected,
                              str(error) if error else None)

    def wait_newer(self, cam: int, after: wire.Frame | None, timeout: float) -> wire.Frame | None:
        """The newest frame of `cam` other than `after`, waiting up to `timeout` s; None if none
        came (or the cache closed). Frames in between are skipped: never a backlog. Counts as
        wanting the camera (an MJPEG stream calling this in a loop keeps it subscribed)."""
        if not self.closed:
            self.want(cam)

        def newer() -> wire.Frame | None:
            state = self._cameras.get(cam)
            frame = state.frame if state is not None else None
            return frame if frame is not None and frame is not after else None

        with self._changed:
            self._changed.wait_for(lambda: newer() or self._stop.is_set(), timeout)
            return newer()

    def snap(self, cam: int, timeout: float, requested_ns: int | None = None) -> wire.Frame:
        """A frame of `cam` captured after `requested_ns` (default: now), from the camera's owner.

        Raises FrameTimeout when none arrives within `timeout` s — at once when the camera is
        disconnected, so waiting requests never pile up on a dead camera — TooManyWaiting at
        once when MAX_SNAP_WAITERS requests wait for this camera already (or
        MAX_SNAP_WAITERS_TOTAL in all), and UnknownCamera if no node announced it.
        """
        self.want(cam)
        start = self.clock() if requested_ns is None else requested_ns
        with self._changed:
            state = self._cameras[cam]
            self._update(state, self.clock())
            if not state.connected:
                raise FrameTimeout(f"camera {cam} is disconnected: nothing heard from node "
                                   f"{state.owner!r} for {self.heartbeat_timeout_ns / 1e9:g} s")
            meta, frame = state.meta, state.frame
            health = meta.health if meta is not None else {}
            # The node is alive, its camera has failed (not merely not yet opened): the node
            # says so with a reason, and no frame came since.
            reason = health.get("last_error")
            if health.get("connected") is False and reason and (
                    frame is None or meta is None or frame.t_receive_ns < meta.t_receive_ns):
                raise FrameTimeout(f"camera {cam} is not delivering frames: node {state.owner!r} "
                                   f"reports it disconnected ({reason})")
            self._start_waiting(cam)
        try:
            return self._next_frame(cam, start, timeout)
        finally:
            with self._changed:
                self._waiting[cam] -= 1
                if not self._waiting[cam]:
                    del self._waiting[cam]

    def _start_waiting(self, cam: int) -> None:
        """Count one more request waiting for `cam`, or turn it away (lock held)."""
        if self._waiting[cam] >= MAX_SNAP_WAITERS:
            raise TooManyWaiting(f"camera {cam} already has {MAX_SNAP_WAITERS} requests waiting "
                                 "for its next frame; retry shortly, or use /latest for the "
                                 "cached one")
        if sum(self._waiting.values()) >= MAX_SNAP_WAITERS_TOTAL:
            raise TooManyWaiting(f"{MAX_SNAP_WAITERS_TOTAL} requests are waiting for a fresh "
                                 "frame already; retry shortly, or use /latest for the cached one")
        self._waiting[cam] += 1

    def _next_frame(self, cam: int, start: int, timeout: float) -> wire.Frame:
        deadline = time.monotonic() + timeout
        previous: wire.Frame | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise FrameTimeout(f"no frame from camera {cam} captured within {timeout:g} s "
                                   "of the request")
            frame = self.subscriber.latest(cam, timeout=remaining, captured_after_ns=start,
                                           newer_than=previous)
            if frame.node == self._cameras[cam].owner:
                return frame
            previous = frame  # another node claiming the same id: never served

    def registry(self) -> dict[str, dict[str, Any]]:
        """`/cameras`: every announced camera's registry entry, keyed by its id string."""
        with self._changed:
            states = sorted(self._cameras.items())
            return {str(cam): {**state.meta.registry, "id": cam}
                    for cam, state in states if state.meta is not None}

    def status(self) -> dict[str, dict[str, Any]]:
        """`/status`: per camera connected, device_id, width, height, fps and health{…}."""
        now = self.clock()
        services: dict[str, tuple[Any, float]] = {}
        reports = [msg for sub in self._service_subscribers
                   for msg in sub.messages(topics.STATUS.encode()).values()]
        for msg in reports:
            if isinstance(msg, wire.Status):
                services[msg.service] = (msg.state.get("cameras", {}), (now - msg.t_receive_ns) / 1e9)
        result = {}
        with self._changed:
            for cam, state in sorted(self._cameras.items()):
                self._update(state, now)
                result[str(cam)] = self._camera_status(state, now, services)
        return result

    def _camera_status(self, state: CameraState, now: int,
                       services: dict[str, tuple[Any, float]]) -> dict[str, Any]:
        meta = state.meta
        registry = meta.registry if meta else {}
        resolution = registry.get("resolution") or [0, 0]
        frame = state.frame
        width, height = (frame.w, frame.h) if frame else (resolution[0], resolution[1])
        node_health = dict(meta.health) if meta else {}
        connected = state.connected and node_health.get("connected", True) is not False
        # A disconnected camera delivers nothing: its last measured rate is history, not fps.
        fps = node_health.get("fps", round(state.fps, 2)) if connected else 0.0
        health: dict[str, Any] = {
            **node_health,
            "gateway": {
                "frame_age_ms": round(frame.age_ns(now) / 1e6) if frame else None,
                "fps_received": round(state.fps, 2),
                "frames_received": state.frames,
                "heartbeat_age_s": round((now - meta.t_receive_ns) / 1e9, 3) if meta else None,
            },
        }
        for service, (cameras, age_s) in services.items():
            if isinstance(cameras, Mapping) and isinstance(cameras.get(str(state.cam)), Mapping):
                health[service] = {**cameras[str(state.cam)], "status_age_s": round(age_s, 1),
                                   "reporting": age_s < SERVICE_SILENT_S}
        entry: dict[str, Any] = {
            "connected": connected,
            "device_id": state.cam, "width": width, "height": height, "fps": fps,
            "node": state.owner, "health": health,
        }
        if state.conflict:
            entry["duplicate"] = {
                "nodes": list(state.conflict), "serving": state.owner,
                "ignored_frames": state.ignored_frames,
                "message": f"camera id {state.cam} is claimed by {len(state.conflict)} nodes; "
                           f"only {state.owner!r} is served",
            }
        return entry

    def world(self) -> dict[str, Any]:
        """`/world`: the tracker's newest model with `age_s`, each object estimated for now
        (carried on from the tracker's moment by this host's clock), or an empty model."""
        msg = self.tracker.message(topics.world()) if self.tracker is not None else None
        if not isinstance(msg, wire.World):
            return {"objects": [], "updated": None, "age_s": None}
        model = msg.at(self.clock())
        model.setdefault("objects", [])
        model.setdefault("updated", None)
        # Both differences on one clock: our wait since receipt, the tracker's since its update.
        age_ns = max(0, self.clock() - msg.t_receive_ns)
        updated = model.get("updated")
        if isinstance(updated, int | float) and not isinstance(updated, bool):
            age_ns += max(0, msg.t_publish_ns - int(updated * 1e9))
        model["age_s"] = round(age_ns / 1e9, 3)
        return model

    def scans(self) -> dict[str, Any]:
        """`/scan`: every node's startup scan report, keyed by node name."""
        return {msg.node: msg.report
                for msg in self.subscriber.messages(topics.SCAN.encode()).values()
                if isinstance(msg, wire.Scan)}
