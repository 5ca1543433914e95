"""One camera's uploads to Connect: which frame, when, and what to do when it fails.

`SnapshotUploader.tick()` does at most one step — subscribe to the camera's JPEG when an upload
is due, take the first frame captured after that, unsubscribe, upload it — and returns how long
until it wants to run again (None when the camera is stopped for good). The subscription lasts
from the upload's turn until its frame is in hand, and is let go *before* the request (which
may take seconds), so a node encodes one frame for the uploader per upload, at most two (one
captured while the unsubscription travels), and nothing between uploads. The price is at most
one frame interval between due and upload: the first capture after the subscription reaches the
node. The service ticks again as soon as a frame of a subscribed camera arrives (service.py),
so no frame waits for a polling interval. Time comes from an injected monotonic clock, so a
test drives the schedule, the backoff and the staleness checks without sleeping.

Connect takes one snapshot per camera per 10 s, counted where the requests arrive, so the
next upload is scheduled `interval_s` after the previous request *ended*: however long a
request took, two never reach Connect closer together than the interval.

States, as published in the uploader's status:

    waiting_for_frame   no frame yet, or no frame newer than the one already uploaded
    ok                  the last upload succeeded
    stale               the newest frame is older than max_age_s: the camera stopped delivering
    backoff             Connect or the network failed; retrying with capped exponential backoff
    refused             Connect refused the token (401/403): re-checked with one request every
                        15 minutes, since a proxy or firewall may answer so for a while
    stopped             Connect refused the fingerprint; nothing is sent until the config is
                        reloaded (SIGHUP) or the process restarts
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import cv2

from ...protocol import wire
from ...protocol.errors import ProtocolError
from ...protocol.jpeg import decode_jpeg, encode_jpeg, is_complete_jpeg, jpeg_size
from ...protocol.subscriber import captured_locally_ns
from ...runtime.backoff import Backoff
from ...runtime.logonce import LogOnce
from ...runtime.version import __version__
from .client import ConnectClient, PermanentError, RequestRejected, TokenRejected, TransientError
from .config import MAX_NAME_LENGTH, CameraUpload

WAITING, OK, STALE, BACKOFF, REFUSED, STOPPED = (
    "waiting_for_frame", "ok", "stale", "backoff", "refused", "stopped")
RECHECK_S = 0.25  # how soon to look again for a frame that is not there yet
TOKEN_RECHECK_S = 15 * 60.0  # a refused token is tried again this often
MIN_SHRUNK_LIMIT = 64 * 1024


class FrameSource(Protocol):
    """Where the uploader gets frames: the newest JPEG of a camera, and the camera's name.

    `want(cam)` / `release(cam)` bracket the time the uploader needs frames of `cam`; between
    them the source may stop receiving that camera altogether.
    """

    def latest(self, cam: int) -> wire.Frame | None: ...

    def camera_name(self, cam: int) -> str | None: ...

    def want(self, cam: int) -> None: ...

    def release(self, cam: int) -> None: ...


class SnapshotUploader:
    """Uploads one fabric camera's newest JPEG to its Connect camera every `interval_s`."""

    def __init__(
        self,
        camera: CameraUpload,
        fingerprint: str,
        client: ConnectClient,
        frames: FrameSource,
        *,
        max_age_s: float = 30.0,
        max_bytes: int = 16 * 1024 * 1024,
        retry_max_s: float = 300.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.camera = camera
        self.fingerprint = fingerprint
        self.client = client
        self.frames = frames
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_bytes = max_bytes
        self.backoff = Backoff(base_s=min(camera.interval_s, 5.0), cap_s=max(retry_max_s, camera.interval_s),
                               rng=rng or random.Random())
        self.clock_ns = clock_ns
        self.wall = wall
        self.on_change = on_change
        self.log = log or logging.getLogger(__name__)
        self.failures_log = LogOnce(self.log)
        self._lock = threading.Lock()
        self._state = WAITING
        self._next_ns = clock_ns()
        self._wanted_since_ns: int | None = None  # subscribed to the camera since then
        self._uploads = 0
        self._failures = 0
        self._rejected = 0
        self._last_upload: float | None = None
        self._last_error = ""
        self._uploaded: tuple[int, int, str] | None = None  # (seq, t_capture_ns, node) sent last
        self._ever_had_frame = False
        self._waiting_since_ns: int | None = None
        self._frame_age_s: float | None = None
        self._info_sent: dict[str, Any] | None = None
        self._limit = max_bytes

    # -- what the service reads ----------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def stopped(self) -> bool:
        return self._state == STOPPED

    @property
    def subscribed(self) -> bool:
        """Whether the uploader holds a subscription to its camera's frames right now."""
        return self._wanted_since_ns is not None

    def status(self) -> dict[str, Any]:
        """This camera's entry in the published status (never the token or fingerprint)."""
        with self._lock:
            now_ns = self.clock_ns()
            next_attempt = None
            if self._state != STOPPED:
                next_attempt = round(self.wall() + max(0, self._next_ns - now_ns) / 1e9, 3)
            return {
                "name": self.camera.name,
                "state": self._state,
                "last_upload": self._last_upload,
                "uploads": self._uploads,
                "last_error": self._last_error,
                "next_attempt": next_attempt,
                "failures": self._failures,
                "rejected": self._rejected,
                "frame_age_s": None if self._frame_age_s is None else round(self._frame_age_s, 3),
                "interval_s": self.camera.interval_s,
            }

    def close(self) -> None:
        """Give back the camera's subscription, if held."""
        self._release()

    # -- the step ------------------------------------------------------------------------------
    def tick(self) -> float | None:
        """Do what is due now; the seconds until the next call is wanted, None once stopped."""
        if self._state == STOPPED:
            return None
        now = self.clock_ns()
        if now < self._next_ns:
            self._release()  # not due: the node need not encode anything for us
            return (self._next_ns - now) / 1e9
        if self._wanted_since_ns is None:
            self._want(now)
        frame = self.frames.latest(self.camera.cam)
        if frame is None:
            self._no_frame(now)
            return RECHECK_S
        age_ns = frame.age_ns(now)
        self._frame_age_s = age_ns / 1e9
        self._ever_had_frame = True
        self._waiting_since_ns = None
        from_before = captured_locally_ns(frame) < (self._wanted_since_ns or 0)
        # A frame kept from before this turn's subscription tells nothing of the camera now
        # (after a long interval it is old by design): like no frame at all, it is judged only
        # once the camera has had max_age_s since the subscription to send a newer one.
        if age_ns > self.max_age_ns and not (from_before and now - (self._wanted_since_ns or 0)
                                             <= self.max_age_ns):
            self._stale(age_ns)
            return min(self.camera.interval_s, RECHECK_S * 2)
        self._fresh_again()
        identity = (frame.seq, frame.t_capture_ns, frame.node)
        # Only a frame captured after the subscription: the one a node replays to a late joiner,
        # or the one this subscriber kept from last time, is not what the camera sees now.
        if identity == self._uploaded or from_before:
            if self._state == OK:
                self._set(WAITING)
            return RECHECK_S
        jpeg = self._prepare(frame)
        if jpeg is None:
            self._uploaded = identity  # never retry a frame that cannot be sent
            return RECHECK_S
        # The frame is in hand: whatever Connect answers, the next upload is a while away.
        self._release()
        return self._upload(frame, identity, jpeg)

    def _upload(self, frame: wire.Frame, identity: tuple[int, int, str], jpeg: bytes) -> float | None:
        try:
            self.client.put_snapshot(self.camera.token or "", self.fingerprint, jpeg)
        except TokenRejected as exc:
            return self._refused(exc)
        except PermanentError as exc:
            return self._stop(exc)
        except TransientError as exc:
            return self._retry_later(exc)
        except RequestRejected as exc:
            return self._rejected_request(exc)
        after = self.clock_ns()
        recovered = self._failures
        was_refused = self._state == REFUSED
        with self._lock:
            self._uploaded = identity
            self._uploads += 1
            self._failures = 0
            self._last_upload = round(self.wall(), 3)
            self._last_error = ""
            self._next_ns = after + int(self.camera.interval_s * 1e9)
        if was_refused:
            self.log.info("%s: Connect accepts the token again; uploading every %g s",
                          self.camera.label, self.camera.interval_s)
        elif recovered:
            self.log.info("%s: uploads to Connect work again after %d failed attempt(s)",
                          self.camera.label, recovered)
        elif self._uploads == 1:
            self.log.info("%s: first snapshot uploaded to Connect (%d bytes)", self.camera.label, len(jpeg))
        if recovered or was_refused:
            self.failures_log.recovered()
        self._set(OK)
        self._send_info(frame, jpeg)
        if self._state == STOPPED:
            return None
        return max(0.0, (self._next_ns - self.clock_ns()) / 1e9)

    def _send_info(self, frame: wire.Frame, jpeg: bytes) -> None:
        """PUT /c/info after the first upload and whenever what it says changes.

        It follows the first snapshot rather than preceding it because Connect registers the
        fingerprint with the first image.
        """
        info = self._info(frame, jpeg)
        if info == self._info_sent:
            return
        try:
            self.client.put_info(self.camera.token or "", self.fingerprint, info)
        except TokenRejected as exc:
            self._refused(exc)
            return
        except PermanentError as exc:
            self._stop(exc)
            return
        except RequestRejected as exc:
            self._info_sent = info  # the same data would be refused again
            self.failures_log.warning("info-rejected", "%s: Connect refused the camera info: %s",
                                      self.camera.label, exc)
            return
        except TransientError as exc:
            self.failures_log.warning("info-failed", "%s: camera info not sent (%s); retrying after "
                                      "the next snapshot", self.camera.label, exc)
            return
        self._info_sent = info
        self.log.info("%s: camera info sent to Connect (%s, %dx%d, %s)", self.camera.label, info["name"],
                      info["resolution"]["width"], info["resolution"]["height"], info["trigger_scheme"])

    def _info(self, frame: wire.Frame, jpeg: bytes) -> dict[str, Any]:
        cam = self.camera.cam
        name = self.camera.name or self.frames.camera_name(cam) or f"camfabric camera {cam}"
        try:
            width, height = jpeg_size(jpeg)  # what was sent: a recompressed frame may be smaller
        except ProtocolError:
            width, height = frame.w, frame.h
        return {
            "name": name[:MAX_NAME_LENGTH],
            "trigger_scheme": self.camera.trigger_scheme,
            "resolution": {"width": int(width), "height": int(height)},
            "manufacturer": "camfabric",
            "model": f"fabric camera {self.camera.cam}",
            "firmware": __version__,
        }

    # -- what to do when things go wrong -------------------------------------------------------
    def _stop(self, exc: PermanentError) -> None:
        with self._lock:
            self._last_error = f"{exc}; {exc.action}"
            self._failures += 1
        self.log.error("%s: stopped uploading: %s. To fix it: %s", self.camera.label, exc, exc.action)
        self._set(STOPPED)
        self._release()
        return None

    def _refused(self, exc: TokenRejected) -> float:
        with self._lock:
            self._last_error = f"{exc}; {exc.action}"
            self._failures += 1
            self._next_ns = self.clock_ns() + int(TOKEN_RECHECK_S * 1e9)
        self.failures_log.error(
            "refused", "%s: Connect refused the token: %s. To fix it: %s. Re-checking with one "
            "request every %d minutes, in case a proxy or firewall answered for Connect",
            self.camera.label, exc, exc.action, TOKEN_RECHECK_S // 60)
        self.log.debug("%s: token still refused (%s); next check in %d minutes", self.camera.label,
                       exc, TOKEN_RECHECK_S // 60)
        self._set(REFUSED)
        return TOKEN_RECHECK_S

    def _retry_later(self, exc: TransientError) -> float:
        now = self.clock_ns()
        with self._lock:
            self._failures += 1
            failures = self._failures
            delay = self.backoff.delay(failures, exc.retry_after)
            self._next_ns = now + int(delay * 1e9)
            self._last_error = str(exc)
        self.failures_log.warning(f"transient:{type(exc).__name__}:{exc.status}",
                                  "%s: upload failed (%s); retrying with backoff, next in %.1f s "
                                  "(further failures of this kind are logged at debug level)",
                                  self.camera.label, exc, delay)
        self.log.debug("%s: attempt %d failed (%s); next in %.1f s", self.camera.label, failures, exc, delay)
        self._set(BACKOFF)
        return delay

    def _rejected_request(self, exc: RequestRejected) -> float:
        with self._lock:
            self._rejected += 1
            self._last_error = str(exc)
            too_large = exc.status == 413 or (exc.status == 400 and ("large" in str(exc).lower()
                                                                     or "size" in str(exc).lower()))
            if too_large and self._limit > MIN_SHRUNK_LIMIT:
                self._limit = max(MIN_SHRUNK_LIMIT, self._limit // 2)
            self._next_ns = self.clock_ns() + int(self.camera.interval_s * 1e9)
        self.failures_log.warning(f"rejected:{exc.status}", "%s: Connect refused a snapshot: %s; trying "
                                  "the next frame in %.1f s", self.camera.label, exc, self.camera.interval_s)
        return self.camera.interval_s

    def _no_frame(self, now: int) -> None:
        if self._waiting_since_ns is None:
            self._waiting_since_ns = now
        waited = (now - self._waiting_since_ns) / 1e9
        if waited * 1e9 > self.max_age_ns:
            with self._lock:
                self._last_error = (f"no frame of camera {self.camera.cam} from the fabric for "
                                    f"{waited:.0f} s: is its capture node running and listed in "
                                    "prusa_connect.nodes?")
            self.failures_log.warning("no-frame", "%s: %s", self.camera.label, self._last_error)
        self._set(STALE if self._ever_had_frame else WAITING)

    def _stale(self, age_ns: int) -> None:
        with self._lock:
            self._last_error = (f"newest frame is {age_ns / 1e9:.1f} s old (max_age_s = "
                                f"{self.max_age_ns / 1e9:g}); the camera stopped delivering")
        if self._state != STALE:
            self.log.warning("%s: %s; not uploading until a fresh frame arrives",
                             self.camera.label, self._last_error)
        self._set(STALE)

    def _fresh_again(self) -> None:
        if self._state == STALE:
            self.log.info("%s: the camera delivers fresh frames again", self.camera.label)
            with self._lock:
                self._last_error = ""
            self._set(WAITING)

    def _prepare(self, frame: wire.Frame) -> bytes | None:
        """The JPEG to send: checked whole, shrunk under the size limit when needed."""
        data = bytes(frame.data)
        if frame.encoding != "jpeg" or not is_complete_jpeg(data):
            self._reject_frame(frame, "is not a complete JPEG (no FFD8 ... FFD9)")
            return None
        if len(data) <= self._limit:
            return data
        try:
            small = shrink_jpeg(data, self._limit)
        except ProtocolError as exc:
            self._reject_frame(frame, f"is {len(data)} bytes and could not be shrunk: {exc}")
            return None
        self.failures_log.info("shrunk", "%s: frames over %d bytes are recompressed before upload "
                               "(%d -> %d bytes)", self.camera.label, self._limit, len(data), len(small))
        return small

    def _reject_frame(self, frame: wire.Frame, why: str) -> None:
        with self._lock:
            self._rejected += 1
            self._last_error = f"frame {frame.seq} {why}"
        self.failures_log.warning(f"frame:{why[:20]}", "%s: skipped frame %d: it %s",
                                  self.camera.label, frame.seq, why)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _want(self, now: int) -> None:
        self.frames.want(self.camera.cam)
        self._wanted_since_ns = now

    def _release(self) -> None:
        if self._wanted_since_ns is not None:
            self._wanted_since_ns = None
            self.frames.release(self.camera.cam)

    def _set(self, state: str) -> None:
        changed = state != self._state
        self._state = state
        if changed and self.on_change is not None:
            self.on_change()


def shrink_jpeg(data: bytes, max_bytes: int) -> bytes:
    """Re-encode `data` (lower quality, then smaller) until it fits in `max_bytes`."""
    image = decode_jpeg(data)
    h, w = image.shape[:2]
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.125, 0.0625):
        scaled = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        for quality in (85, 70, 50):
            out = encode_jpeg(scaled, quality)
            if len(out) <= max_bytes:
                return out
    raise ProtocolError(f"no re-encoding of a {w}x{h} image fits in {max_bytes} bytes")


__all__ = ["BACKOFF", "OK", "REFUSED", "STALE", "STOPPED", "WAITING", "FrameSource", "SnapshotUploader",
           "shrink_jpeg"]
