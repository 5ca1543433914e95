"""The uploader process's moving parts: one worker thread per camera, the fabric, the status.

`UploaderService(config).start()` subscribes to the configured cameras' JPEG frames, runs a
`SnapshotUploader` per camera on its own thread (so one slow or failing Connect camera never
delays another), and publishes `Status(service="prusa_connect")` on its own XPUB endpoint every
`status_interval_s` and whenever a camera changes state. `reload(config)` applies a new
configuration: changed, stopped or refused cameras start afresh, the others carry on untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests
import zmq

from ...protocol import topics, wire
from ...protocol.errors import FrameTimeout, UnknownCamera
from ...protocol.publisher import Publisher
from ...protocol.subscriber import Subscriber
from ...runtime.errors import CamfabricError
from ...runtime.version import __version__
from .client import ConnectClient
from .config import CameraUpload, PrusaConnectConfig
from .fingerprint import FingerprintStore
from .uploader import REFUSED, STOPPED, SnapshotUploader

SERVICE = "prusa_connect"
JOIN_S = 0.5

log = logging.getLogger(__name__)


class FabricFrames:
    """The uploaders' view of the fabric: newest JPEG and name per camera, from a Subscriber.

    The subscriber is made for the configured cameras (their heartbeats keep flowing), but a
    camera's `jpeg` topic is subscribed only between `want(cam)` and `release(cam)`: around each
    upload, so that a node encodes nothing for the uploader the rest of the time. Uses
    `Subscriber.subscribe()` / `unsubscribe()` with `topics.frame(cam, "jpeg")`.
    """

    def __init__(self, subscriber: Subscriber) -> None:
        self._lock = threading.Lock()
        self._wanted: dict[int, int] = {}
        self._arrivals: dict[int, set[threading.Event]] = {}
        self.subscriber = subscriber
        self.attach(subscriber)

    def attach(self, subscriber: Subscriber) -> None:
        """Read from `subscriber` (a new one after a reload), keeping the current wants."""
        subscriber.add_listener(self._arrived)
        with self._lock:
            self.subscriber = subscriber
            for cam in subscriber.cameras or ():
                if not self._wanted.get(cam):
                    subscriber.unsubscribe(topics.frame(cam, "jpeg"))

    def want(self, cam: int) -> None:
        with self._lock:
            self._wanted[cam] = self._wanted.get(cam, 0) + 1
            if self._wanted[cam] == 1:
                self._control(self.subscriber.subscribe, cam)

    def release(self, cam: int) -> None:
        with self._lock:
            if not self._wanted.get(cam):
                return
            self._wanted[cam] -= 1
            if self._wanted[cam] == 0:
                self._control(self.subscriber.unsubscribe, cam)

    def subscribed(self, cam: int) -> bool:
        with self._lock:
            return bool(self._wanted.get(cam))

    def on_frame(self, cam: int, event: threading.Event) -> None:
        """Set `event` whenever a JPEG of `cam` arrives (only while it is wanted, then)."""
        with self._lock:
            self._arrivals.setdefault(cam, set()).add(event)

    def forget(self, cam: int, event: threading.Event) -> None:
        with self._lock:
            self._arrivals.get(cam, set()).discard(event)

    def _arrived(self, msg: wire.Message) -> None:
        # On the subscriber's receive thread, after the frame is stored: `latest` returns it.
        if isinstance(msg, wire.Frame):
            with self._lock:
                events = list(self._arrivals.get(msg.cam, ()))
            for event in events:
                event.set()

    def latest(self, cam: int) -> wire.Frame | None:
        try:
            return self.subscriber.latest(cam, timeout=0)
        except (FrameTimeout, UnknownCamera):
            return None

    def camera_name(self, cam: int) -> str | None:
        meta = self.subscriber.meta(cam)
        name = meta.registry.get("name") if meta is not None else None
        return name if isinstance(name, str) and name else None

    def _control(self, action: Callable[[bytes], None], cam: int) -> None:
        try:
            action(topics.frame(cam, "jpeg"))
        except CamfabricError as exc:  # the subscriber closed under us: a reload or a stop
            log.debug("camera %s: subscription change not applied: %s", cam, exc)


class CameraWorker:
    """A thread that ticks one uploader until told to quit: when the uploader asked to be, and
    at once when a frame of its camera arrives (`frames`), so an upload takes its frame the
    moment it is there and lets the subscription go."""

    def __init__(self, uploader: SnapshotUploader, frames: FabricFrames | None = None) -> None:
        self.uploader = uploader
        self.frames = frames
        self._quit = threading.Event()
        self._wake = threading.Event()  # quit, or a frame of the camera arrived
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"prusa-connect-cam{uploader.camera.cam}")
        self._errors: set[str] = set()

    def start(self) -> CameraWorker:
        self._thread.start()
        return self

    def quit(self) -> None:
        self._quit.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        cam = self.uploader.camera.cam
        if self.frames is not None:
            self.frames.on_frame(cam, self._wake)
        try:
            self._tick_until_quit()
        finally:
            if self.frames is not None:
                self.frames.forget(cam, self._wake)
            self.uploader.close()

    def _tick_until_quit(self) -> None:
        while not self._quit.is_set():
            self._wake.clear()  # before the tick: a frame arriving during it wakes the next
            try:
                delay = self.uploader.tick()
            except Exception as exc:  # a bug or a library surprise must not end this camera
                kind = type(exc).__name__
                if kind not in self._errors:
                    self._errors.add(kind)
                    log.exception("%s: unexpected error in the upload loop; carrying on",
                                  self.uploader.camera.label)
                delay = self.uploader.camera.interval_s
            if delay is None:
                self._quit.wait()  # stopped: wait for a reload to replace this worker
                break
            self._wake.wait(max(0.01, delay))


class UploaderService:
    """Runs every configured camera's uploader and publishes their state."""

    def __init__(
        self,
        config: PrusaConnectConfig,
        *,
        context: zmq.Context | None = None,
        session_factory: Callable[[], requests.Session] = requests.Session,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.session_factory = session_factory
        self.clock_ns = clock_ns
        self.wall = wall
        self.fingerprints = FingerprintStore(config.state_dir)
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.frames: FabricFrames | None = None
        self.workers: dict[int, CameraWorker] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._status_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> UploaderService:
        """Check fingerprints, bind the status publisher, subscribe, start every camera."""
        for camera in self.config.cameras:
            self._fingerprint(camera)  # fail before anything runs if the state file is unusable
        try:
            self.publisher = Publisher(self.config.publish, context=self.context, sndhwm=16).start()
        except zmq.ZMQError as exc:
            raise CamfabricError(f"cannot publish the uploader status on {self.config.publish}: {exc} "
                                 "(is another uploader running? see prusa_connect.publish)") from exc
        try:
            self.subscriber = self._subscribe(self.config)
        except zmq.ZMQError as exc:
            self.publisher.stop()
            raise CamfabricError(f"cannot subscribe to {', '.join(self.config.nodes)}: {exc} "
                                 "(see prusa_connect.nodes)") from exc
        except BaseException:  # e.g. a CURVE key file that is not a key: a ConfigError
            self.publisher.stop()
            raise
        self.frames = FabricFrames(self.subscriber)
        log.info("uploading %d camera(s) to %s; fabric %s; status on %s",
                 len(self.config.cameras), self.config.server, ", ".join(self.config.nodes),
                 self.publisher.endpoint)
        for camera in self.config.cameras:
            self._start_camera(camera)
        self._status_thread = threading.Thread(target=self._publish_status, name="prusa-connect-status",
                                               daemon=True)
        self._status_thread.start()
        return self

    def stop(self) -> None:
        """Stop every camera and close the fabric sockets (linger 0), within about a second."""
        self._stopping.set()
        self._changed.set()
        with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for worker in workers:
            worker.quit()
        deadline = time.monotonic() + JOIN_S
        for worker in workers:
            # A worker inside an HTTP request cannot be interrupted; it is a daemon thread and
            # its answer is discarded when the process exits.
            worker.join(max(0.0, deadline - time.monotonic()))
            if not worker.alive:
                worker.uploader.client.close()
        if self._status_thread is not None:
            self._status_thread.join(JOIN_S)
        if self.publisher is not None:
            # A last, empty status, so the gateway stops showing cameras as being uploaded.
            sent = self.publisher.sent
            self._publish_once()
            deadline = time.monotonic() + 0.2
            while self.publisher.sent == sent and time.monotonic() < deadline:
                time.sleep(0.01)
            self.publisher.stop()
        if self.subscriber is not None:
            self.subscriber.close()

    def __enter__(self) -> UploaderService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reload(self, config: PrusaConnectConfig) -> None:
        """Apply a new configuration; cameras that changed or had stopped start afresh."""
        old = self.config
        if config.publish != old.publish:
            log.warning("prusa_connect.publish changed; the status endpoint moves only on restart")
        if config.state_dir != old.state_dir:
            self.fingerprints = FingerprintStore(config.state_dir)
        for camera in config.cameras:
            self._fingerprint(camera)
        new_cams = {c.cam for c in config.cameras}
        if (config.nodes, config.curve) != (old.nodes, old.curve) or new_cams != {c.cam for c in old.cameras}:
            previous = self.subscriber
            self.subscriber = self._subscribe(config)
            self.frames.attach(self.subscriber)
            if previous is not None:
                previous.close()
        connection_changed = (config.server, config.timeout_s) != (old.server, old.timeout_s)
        limits_changed = ((config.max_age_s, config.max_bytes, config.retry_max_s)
                          != (old.max_age_s, old.max_bytes, old.retry_max_s))
        self.config = config
        restarted = []
        with self._lock:
            current = dict(self.workers)
        for cam, worker in current.items():
            if cam not in new_cams:
                self._stop_camera(cam)
                log.info("%s: removed from the configuration; no longer uploaded",
                         worker.uploader.camera.label)
        for camera in config.cameras:
            worker = current.get(camera.cam)
            # A reload is also the user saying "try again" to a camera Connect refused.
            if (worker is None or worker.uploader.camera != camera
                    or worker.uploader.state in (STOPPED, REFUSED)
                    or connection_changed or limits_changed):
                if worker is not None:
                    self._stop_camera(camera.cam)
                self._start_camera(camera)
                restarted.append(camera.label)
        log.info("configuration reloaded; (re)started: %s", ", ".join(restarted) or "none")
        self._changed.set()

    # -- cameras -------------------------------------------------------------------------------
    def _fingerprint(self, camera: CameraUpload) -> str:
        return camera.fingerprint or self.fingerprints.get(camera.cam)

    def _subscribe(self, config: PrusaConnectConfig) -> Subscriber:
        return Subscriber(list(config.nodes), cameras=[c.cam for c in config.cameras], encoding="jpeg",
                          context=self.context, curve=config.curve_clients or None,
                          clock=self.clock_ns).start()

    def _start_camera(self, camera: CameraUpload) -> None:
        client = ConnectClient(self.config.server, self.config.timeout_s, self.session_factory(),
                               user_agent=f"camfabric/{__version__}")
        uploader = SnapshotUploader(
            camera, self._fingerprint(camera), client, self.frames,
            max_age_s=self.config.max_age_s, max_bytes=self.config.max_bytes,
            retry_max_s=self.config.retry_max_s, clock_ns=self.clock_ns, wall=self.wall,
            on_change=self._changed.set,
        )
        with self._lock:
            self.workers[camera.cam] = CameraWorker(uploader, self.frames).start()

    def _stop_camera(self, cam: int) -> None:
        with self._lock:
            worker = self.workers.pop(cam, None)
        if worker is not None:
            worker.quit()
            worker.join(JOIN_S)
            if not worker.alive:
                worker.uploader.client.close()

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        """The state published on status/prusa_connect/: per camera, keyed by fabric id."""
        with self._lock:
            workers = dict(self.workers)
        return {
            "cameras": {str(cam): worker.uploader.status() for cam, worker in sorted(workers.items())},
            "server": self.config.server,
            "running": not self._stopping.is_set(),
            "version": __version__,
        }

    def _publish_once(self) -> None:
        if self.publisher is not None:
            self.publisher.publish(wire.Status(service=SERVICE, state=self.status()))

    def _publish_status(self) -> None:
        while not self._stopping.is_set():
            self._changed.clear()
            try:
                self._publish_once()
            except Exception:  # the status must never take the uploads down with it
                log.exception("publishing the uploader status failed")
            self._changed.wait(self.config.status_interval_s)
            # Coalesce a burst of state changes into one message.
            self._stopping.wait(0.05)


__all__ = ["SERVICE", "CameraWorker", "FabricFrames", "UploaderService"]
