"""One camera's capture thread: read the source, publish what subscribers want, survive failures.

Each capture gets the next `seq` and is kept as a `Shot`, which produces its encodings lazily
and at most once: the JPEG is the source's own bytes passed through untouched when the source
delivers JPEG and no rotation/flip applies, otherwise one encode; the raw `bgr8`/`gray8`
picture is decoded or converted only when someone wants it. Nothing is produced for a topic
nobody subscribes to. H.264 (`h264.H264Encoder`) is a stream, not a per-shot product: the
loop feeds every capture to one encoder while someone subscribes, closes it when nobody does,
and answers a new subscriber with a forced keyframe instead of a replayed picture.

A source that fails to open or dies mid-read is closed and opened again after a capped
exponential backoff (reset by the next good frame). The failure shows in the camera's health
(connected=false, last_error, retries, errors) and is logged once per distinct cause; the
node's other cameras run on their own threads and never notice.

The newest shot stays in memory so a late joiner — someone subscribing to an encoding that
was not being produced — gets it at once (`replay`) instead of waiting for the next capture.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..protocol import topics, wire
from ..protocol.errors import ProtocolError
from ..protocol.jpeg import decode_jpeg, encode_jpeg, is_complete_jpeg
from ..protocol.publisher import Publisher
from ..protocol.wire import Frame
from ..runtime.backoff import Backoff
from ..runtime.errors import CamfabricError
from ..runtime.logonce import LogOnce
from .config import CameraConfig
from .errors import SourceError
from .h264 import AccessUnit, H264Decoder, H264Encoder
from .source import Capture, ProbeReport, Source
from .transform import Transform

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


class Counters:
    """What a camera's thread did, for its health: the CPU-relevant work counted one by one."""

    NAMES = ("frames", "errors", "retries", "encodes", "decodes", "conversions", "transforms",
             "passthrough", "publish_failed", "h264_encodes")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)
        self.published = dict.fromkeys(topics.ENCODINGS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def add_published(self, encoding: str) -> None:
        with self._lock:
            self.published[encoding] += 1

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._counts, "published": dict(self.published)}


class Shot:
    """One capture of one camera, turned into each encoding on first demand, at most once."""

    def __init__(self, seq: int, capture: Capture, transform: Transform, quality: int,
                 counters: Counters) -> None:
        self.seq = seq
        self.capture = capture
        self.t_capture_ns = capture.t_capture_ns
        self.transform = transform
        self.quality = quality
        self.counters = counters
        self._lock = threading.Lock()
        self._pixels: np.ndarray | None = None
        self._made: dict[str, Any] = {}

    @property
    def has_picture(self) -> bool:
        """False for an H.264 access unit nobody decoded (nobody wanted a picture of it)."""
        return self.capture.jpeg is not None or self.capture.image is not None

    def _picture(self) -> np.ndarray:
        """The transformed picture, BGR or gray as the source delivered it (decoding if needed)."""
        if self._pixels is None:
            image = self.capture.image
            if image is None:
                if not is_complete_jpeg(self.capture.jpeg):  # OpenCV would half-decode it
                    raise ProtocolError(f"the source delivered an incomplete JPEG of "
                                        f"{len(self.capture.jpeg)} bytes")
                image = decode_jpeg(self.capture.jpeg)
                self.counters.add("decodes")
            if not self.transform.identity:
                image = self.transform.apply(image)
                self.counters.add("transforms")
            self._pixels = np.ascontiguousarray(image)
        return self._pixels

    def jpeg(self) -> tuple[bytes, int, int]:
        """(JPEG bytes, w, h): the source's own JPEG when it can pass through, else one encode."""
        with self._lock:
            if "jpeg" not in self._made:
                if self.capture.jpeg is not None and self.transform.identity:
                    self.counters.add("passthrough")
                    self._made["jpeg"] = (self.capture.jpeg, self.capture.w, self.capture.h)
                else:
                    picture = self._picture()
                    data = encode_jpeg(picture, self.quality)
                    self.counters.add("encodes")
                    self._made["jpeg"] = (data, picture.shape[1], picture.shape[0])
            return self._made["jpeg"]

    def raw(self, encoding: str) -> np.ndarray:
        """The picture as `bgr8` (h, w, 3) or `gray8` (h, w) uint8, contiguous."""
        with self._lock:
            if encoding not in self._made:
                picture = self._picture()
                if encoding == "bgr8" and picture.ndim == 2:
                    picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
                    self.counters.add("conversions")
                elif encoding == "gray8" and picture.ndim == 3:
                    picture = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
                    self.counters.add("conversions")
                self._made[encoding] = np.ascontiguousarray(picture)
            return self._made[encoding]


class CaptureLoop:
    """The capture thread of one camera: reads `source`, publishes through `publisher`."""

    def __init__(
        self,
        camera: CameraConfig,
        source: Source,
        publisher: Publisher,
        *,
        node: str,
        jpeg_quality: int = 80,
        backoff: Backoff | None = None,
        on_probe: Callable[[int, ProbeReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self.camera = camera
        self.source = source
        self.publisher = publisher
        self.node = node
        self.jpeg_quality = jpeg_quality
        self.backoff = backoff or Backoff()
        self.on_probe = on_probe
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self.transform = Transform(camera.rotation, camera.flip)
        self.counters = Counters()
        self.video = H264Encoder(camera.fps, log=self.log)
        self.decoder = H264Decoder()  # for a camera that delivers H.264 itself
        self.topics = {enc: topics.frame(camera.id, enc) for enc in topics.ENCODINGS}
        self.read_timeout = max(2.0, 3.0 / camera.fps)
        self.connected = False
        self.state = "starting"
        self.last_error = ""
        self.size = camera.output_size
        self.cpu_s = 0.0  # CPU time of the capture thread (reading, drawing, encoding, sending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: Shot | None = None
        self._published_seq: dict[str, int] = {}
        self._publish_lock = threading.Lock()
        self._seq = 0
        self._failures_in_row = 0
        self._retry_delay = 0.0
        self.failures = LogOnce(self.log)
        self._times: collections.deque[float] = collections.deque(maxlen=256)
        self._fps_window = max(2.0, 3.0 / camera.fps)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> CaptureLoop:
        self._thread = threading.Thread(target=self._run, name=f"camfabric-camera-{self.camera.id}",
                                        daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the thread to stop and wake a source blocked in read."""
        self._stop.set()
        try:
            self.source.interrupt()
        except Exception:
            self.log.exception("camera %s: interrupting its source failed", self.camera.id)

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- what the node reads -----------------------------------------------------------------
    def measured_fps(self, now: float | None = None) -> float:
        """Frames per second over the last couple of seconds (0 when frames stopped coming)."""
        now = self.clock() if now is None else now
        times = [t for t in list(self._times) if now - t <= self._fps_window]
        if len(times) < 2:
            return 0.0
        return round((len(times) - 1) / (times[-1] - times[0]), 2) if times[-1] > times[0] else 0.0

    def health(self) -> dict[str, Any]:
        """The camera's health for its heartbeat: connection, rates, failures and work done."""
        counts = self.counters.snapshot()
        w, h = self.size
        shot = self._latest
        return {
            "connected": self.connected,
            "state": self.state,
            "fps": self.measured_fps(),
            "configured_fps": self.camera.fps,
            "frames": counts.pop("frames"),
            "errors": counts.pop("errors"),
            "retries": counts.pop("retries"),
            "last_error": self.last_error,
            "node": self.node,
            "width": w,
            "height": h,
            "source": self.camera.kind,
            "last_capture_ns": shot.t_capture_ns if shot is not None else 0,
            "seq": self._seq,
            "cpu_s": round(self.cpu_s, 3),
            **counts,
        }

    def replay(self, prefix: bytes) -> int:
        """Publish the newest capture on every encoding under `prefix` that it was not yet
        published in (a late joiner asked for it); returns how many messages went out."""
        shot = self._latest
        if shot is None:
            return 0
        sent = 0
        for encoding, topic in self.topics.items():
            if topic.startswith(prefix) and encoding in topics.VIDEO_ENCODINGS:
                self.video.force_keyframe()  # the next capture starts the joiner's stream
            elif (topic.startswith(prefix) and self._published_seq.get(encoding) != shot.seq
                  and shot.has_picture):
                sent += self._publish(shot, encoding)
        return sent

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        cam = self.camera.id
        if self.on_probe is not None and not self._stop.is_set():
            report = self._probe()
            try:
                self.on_probe(cam, report)
            except Exception:
                self.log.exception("camera %s: handing on its probe report failed", cam)
        opened = False
        try:
            while not self._stop.is_set():
                if not opened:
                    try:
                        self.source.open()
                        opened = True
                    except Exception as exc:
                        if self._stop.is_set():
                            break  # shutdown interrupted the open: not a camera failure
                        self._failed(exc, "open")
                        self._close_source()
                        self._wait_backoff()
                        continue
                if self._stop.is_set():
                    break  # a stop that raced the open: do not start a read it cannot interrupt
                try:
                    capture = self.source.read(self.read_timeout)
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    self._failed(exc, "read")
                    self._close_source()
                    opened = False
                    self._wait_backoff()
                    continue
                try:
                    self._captured(capture)
                except Exception as exc:  # a picture we cannot handle; the next may be fine
                    self.counters.add("errors")
                    self.last_error = f"processing failed: {type(exc).__name__}: {exc}"
                    self.failures.warning(f"processing: {type(exc).__name__}", "camera %s: could not "
                                          "process a capture: %s (repeats are only counted)",
                                          self.camera.id, self.last_error, exc_info=exc)
        finally:
            self._close_source()
            self.connected = False
            self.state = "stopped"

    def _probe(self) -> ProbeReport:
        try:
            return self.source.probe()
        except Exception as exc:  # a source bug must not keep the camera from starting
            self.log.exception("camera %s: probing failed", self.camera.id)
            return ProbeReport(opened=False, device=self.camera.device or self.camera.kind,
                               error=f"{type(exc).__name__}: {exc}")

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            self.log.exception("camera %s: closing its source failed", self.camera.id)

    def _failed(self, exc: BaseException, during: str) -> None:
        self.connected = False
        self.state = "retrying"
        self._failures_in_row += 1
        self.counters.add("errors")
        cause = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        self.last_error = f"{during} failed: {cause}"
        self._retry_delay = self.backoff.delay(self._failures_in_row)
        if isinstance(exc, SourceError):
            self.failures.warning(f"{during}: {type(exc).__name__}", "camera %s (%s): %s; retrying in "
                                  "%.2g s (repeats of this are only counted)", self.camera.id,
                                  self.camera.name, self.last_error, self._retry_delay)
        else:
            self.failures.error(f"{during}: {type(exc).__name__}", "camera %s (%s): %s; retrying in "
                                "%.2g s", self.camera.id, self.camera.name, self.last_error,
                                self._retry_delay, exc_info=exc)

    def _wait_backoff(self) -> None:
        if self._stop.wait(self._retry_delay):
            return
        self.counters.add("retries")

    def _captured(self, capture: Capture) -> None:
        if self._failures_in_row:
            self.log.info("camera %s (%s) capturing again after %d failed attempt(s)",
                          self.camera.id, self.camera.name, self._failures_in_row)
            self._failures_in_row = 0
            self.failures.recovered()
        self.connected = True
        self.state = "capturing"
        self._seq += 1
        self._times.append(self.clock())
        self.counters.add("frames")
        self.size = self.transform.size(capture.w, capture.h)
        wanted = {encoding: self.publisher.wants(topic) for encoding, topic in self.topics.items()}
        if capture.h264 is not None:
            capture = self._decoded(capture, wanted)
        shot = Shot(self._seq, capture, self.transform, self.jpeg_quality, self.counters)
        self._latest = shot
        for encoding, want in wanted.items():
            if encoding in topics.VIDEO_ENCODINGS:
                self._publish_video(shot, wanted=want)
            elif want and shot.has_picture:
                self._publish(shot, encoding)
        self.cpu_s = time.thread_time()

    def _publish(self, shot: Shot, encoding: str) -> int:
        try:
            if encoding == "jpeg":
                data, w, h = shot.jpeg()
                step = 0
            else:
                pixels = shot.raw(encoding)
                h, w = pixels.shape[:2]
                step = pixels.strides[0]
                data = memoryview(pixels).cast("B")
            frame = Frame(cam=self.camera.id, seq=shot.seq, t_capture_ns=shot.t_capture_ns, w=w,
                          h=h, encoding=encoding, data=data, node=self.node,
                          frame_id=self.camera.frame_id, step=step)
            with self._publish_lock:
                if self._published_seq.get(encoding, 0) >= shot.seq:
                    return 0  # a late joiner's replay raced the capture thread; never go back
                ok = self.publisher.publish(frame)
                self._published_seq[encoding] = shot.seq
        except CamfabricError as exc:
            self.counters.add("publish_failed")
            self.failures.warning(f"publish {encoding}: {type(exc).__name__}", "camera %s: could not "
                                  "publish %s frame %d: %s (repeats are only counted)", self.camera.id,
                                  encoding, shot.seq, exc)
            return 0
        if not ok:
            self.counters.add("publish_failed")
            return 0
        self.counters.add_published(encoding)
        return 1

    def _decoded(self, capture: Capture, wanted: dict[str, bool]) -> Capture:
        """`capture` (an H.264 access unit) with its picture, decoded while someone wants one:
        a JPEG or raw consumer, or an H.264 one of a turned or flipped camera."""
        needs = any(want for encoding, want in wanted.items() if encoding not in topics.VIDEO_ENCODINGS)
        needs = needs or (wanted["h264"] and not self.transform.identity)
        if not needs:
            self.decoder.close()
            return capture
        try:
            image = self.decoder.decode(capture.h264, capture.key)
        except Exception as exc:  # a damaged unit, or no PyAV: start again at the next keyframe
            self.decoder.close()
            self.counters.add("errors")
            self.failures.warning(f"h264 decode: {type(exc).__name__}", "camera %s: cannot decode "
                                  "its H.264 for JPEG and raw consumers: %s (repeats are only "
                                  "counted)", self.camera.id, exc)
            return capture
        if image is None:
            return capture  # waiting for a keyframe to start decoding at
        self.counters.add("decodes")
        return dataclasses.replace(capture, image=image)

    def _publish_video(self, shot: Shot, wanted: bool) -> None:
        """Feed `shot` to the H.264 encoder while someone subscribes; close it when nobody does.
        A camera's own H.264 is passed through untouched (unless turned or flipped)."""
        if not wanted:
            if self.video.running:
                self.video.close()
            return
        capture = shot.capture
        if capture.h264 is not None and self.transform.identity:
            self.counters.add("passthrough")
            self._publish_units([AccessUnit(capture.h264, capture.key, shot.seq, shot.t_capture_ns,
                                            capture.w, capture.h)])
            return
        if not shot.has_picture:
            return  # an H.264 camera's picture before the decoder's first keyframe
        try:
            units = self.video.encode(shot.raw("bgr8"), shot.seq, shot.t_capture_ns)
            self.counters.add("h264_encodes")
        except Exception as exc:  # no PyAV, no codec: JPEG and raw consumers go on unaffected
            self.counters.add("publish_failed")
            self.failures.warning(f"h264: {type(exc).__name__}", "camera %s: cannot encode H.264: "
                                  "%s (repeats are only counted)", self.camera.id, exc)
            return
        self._publish_units(units)

    def _publish_units(self, units: list[AccessUnit]) -> None:
        for unit in units:
            frame = Frame(cam=self.camera.id, seq=unit.seq, t_capture_ns=unit.t_capture_ns,
                          w=unit.w, h=unit.h, encoding="h264", data=unit.data, node=self.node,
                          frame_id=self.camera.frame_id, key=unit.key)
            # Kept out of the last-value cache: a late joiner needs a keyframe, not the newest
            # access unit, and gets one (force_keyframe) from the next capture.
            if self.publisher.publish_parts(wire.encode(frame), cache=False):
                self.counters.add_published("h264")
            else:
                self.counters.add("publish_failed")
