"""Falcon resources of the gateway's HTTP API (ARCHITECTURE.md, "HTTP API").

Each resource is a small class with `on_get`; `on_head` answers the same headers without a
body (Falcon drops the body of a HEAD answer and keeps its Content-Length). Domain errors
(`UnknownCamera`, `FrameTimeout`, `ProtocolError`) are raised as they are and mapped to HTTP
once, in `app.py`; what only HTTP knows (a bad id, a dead camera) is raised here as Falcon's.

Which frame each image route serves:

- `/latest/{id}`: the cached newest frame at once, with its true age in `X-Frame-Age-Ms` —
  until the camera is disconnected (503 then).
- the snapshot routes (`/snapshot.jpg`, `/?action=snapshot`, `action=snapshot` on a stream
  route): a *live* frame — the cached one while it is younger than `stale_after_s`, else a new
  one waited for (up to the snap timeout); 503 naming the camera and its last error otherwise.
- `/snap/{id}`, `/frame/{id}`: a frame captured after the request arrived; 503 at once for a
  disconnected camera.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as package_files
from typing import Any

import falcon

from ..protocol import wire
from ..protocol.errors import FrameTimeout
from .cache import CameraView, FrameCache, TooManyWaiting
from .mjpeg import CONTENT_TYPE as MJPEG_CONTENT_TYPE
from .mjpeg import MjpegStream, StreamSlots, StreamStats
from .rawframes import RawFrames
from .waitress_seam import request_connection

IMAGE_HEADERS = {"Cache-Control": "no-cache"}
RETRY_AFTER_S = 1
# A dead camera rarely comes back within a second; a client polling it waits a little longer.
DOWN_RETRY_AFTER_S = 2
LATEST_ROUTE = "/latest/{cam_id}"
FORMATS = ("jpeg", "raw")
# `?fps=N` on a stream: parts per second, at most this many (and more than none).
MAX_STREAM_FPS = 120.0
ACTIONS = ("snapshot", "stream")
# Camera ids are small integers (the config bounds them to 1 000 000): more digits than this
# is refused before any conversion, and never echoed back in full.
MAX_ID_DIGITS = 9
ECHO_CHARS = 24
STATIC_TYPES = {".html": falcon.MEDIA_HTML, ".js": falcon.MEDIA_JS, ".css": "text/css",
                ".svg": "image/svg+xml"}


def _echo(value: str) -> str:
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…")


def camera_id(value: str | None, what: str = "camera id") -> int:
    """The integer camera id in `value`, or 400 naming what was wrong (the value cut short)."""
    if value is None or not (value.isascii() and value.isdigit()):
        shown = _echo(value) if value is not None else "nothing"
        raise falcon.HTTPBadRequest(title="Bad camera id",
                                    description=f"{what} must be a non-negative integer, got {shown}")
    if len(value) > MAX_ID_DIGITS:
        raise falcon.HTTPBadRequest(title="Bad camera id",
                                    description=f"{what} has {len(value)} digits; camera ids have "
                                                f"at most {MAX_ID_DIGITS}")
    return int(value)


def fps_param(req: falcon.Request) -> float | None:
    """The `fps` query parameter of a stream: at most N parts per second; None when absent."""
    raw = req.get_param("fps")
    if raw is None:
        return None
    try:
        fps = float(raw)
    except ValueError:
        fps = float("nan")
    if not 0 < fps <= MAX_STREAM_FPS:  # NaN fails too
        raise falcon.HTTPBadRequest(
            title="Bad fps", description=f"fps is parts per second, above 0 and at most "
                                         f"{MAX_STREAM_FPS:g} (e.g. 0.5: one part per 2 s), got {_echo(raw)}")
    return fps


def camera_param(req: falcon.Request, default: int) -> int:
    """The `cam` query parameter, or `default` when the query has none."""
    raw = req.get_param("cam")
    return default if raw is None else camera_id(raw, "cam")


class CameraNotLive(falcon.HTTPServiceUnavailable):
    """503 for a camera that is disconnected or whose newest frame is too old; the body names
    the camera and its last error besides Falcon's title and description."""

    def __init__(self, cam: int, description: str, last_error: str | None) -> None:
        super().__init__(title="Camera not live", description=description,
                         retry_after=DOWN_RETRY_AFTER_S)
        self.cam = cam
        self.last_error = last_error

    def to_dict(self, obj_type: type = dict) -> Any:
        body = super().to_dict(obj_type)
        body["camera"] = self.cam
        body["last_error"] = self.last_error
        return body


def _not_live(cam: int, why: str, last_error: str | None) -> CameraNotLive:
    reason = f": {last_error}" if last_error else ""
    return CameraNotLive(cam, f"camera {cam} {why}{reason}", last_error)


def _no_frame_yet(cam: int) -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(
        title="No frame yet", description=f"camera {cam} has no frame yet; retry shortly",
        retry_after=RETRY_AFTER_S)


def require_connected(cam: int, view: CameraView) -> None:
    """503 unless `view`'s camera is connected: "no frame yet" for a camera that is starting
    (its node is heard from and reports it not up yet, with no error and no frame so far),
    "disconnected" with its last error otherwise."""
    if view.connected:
        return
    if view.node_alive and view.frame is None and view.last_error is None:
        raise _no_frame_yet(cam)
    raise _not_live(cam, "is disconnected", view.last_error)


def send_jpeg(resp: falcon.Response, frame: wire.Frame) -> None:
    resp.content_type = "image/jpeg"
    resp.data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)  # WSGI: bytes
    resp.set_headers(IMAGE_HEADERS)
    resp.set_header("X-Timestamp", f"{frame.t_capture_ns / 1e9:.6f}")


def send_aged(resp: falcon.Response, cache: FrameCache, frame: wire.Frame) -> None:
    send_jpeg(resp, frame)
    resp.set_header("X-Frame-Age-Ms", str(round(frame.age_ns(cache.clock()) / 1e6)))


@dataclass(frozen=True, slots=True)
class Frames:
    """How the image routes pick a frame: the cache, the snap timeout, the staleness bound."""

    cache: FrameCache
    timeout_s: float
    stale_after_s: float
    # camera -> when its /latest was last answered (time.monotonic): quick.py answers the
    # cameras asked for lately without the framework.
    answered: dict[int, float] = field(default_factory=dict)
    raw: RawFrames = field(default_factory=RawFrames)  # decodes for format=raw, bounded

    def latest(self, resp: falcon.Response, cam: int) -> None:
        """The cached newest JPEG with X-Frame-Age-Ms; 503 + Retry-After before the first
        frame and once the camera is disconnected."""
        self.cache.latest(cam)  # wants the camera; after an idle time, waits for a fresh frame
        view = self.cache.view(cam)
        require_connected(cam, view)
        if view.frame is None:
            raise _no_frame_yet(cam)
        send_aged(resp, self.cache, view.frame)
        self.answered[cam] = time.monotonic()

    def live(self, resp: falcon.Response, cam: int) -> None:
        """A frame no older than `stale_after_s`: the cached one, else one waited for; 503
        naming the camera and its last error when neither is to be had."""
        self.cache.latest(cam)  # wants the camera; after an idle time, waits for a fresh frame
        view = self.cache.view(cam)
        require_connected(cam, view)
        frame = view.frame
        limit_ns = self.stale_after_s * 1e9
        if frame is None or frame.age_ns(self.cache.clock()) > limit_ns:
            try:
                frame = self.cache.snap(cam, self.timeout_s)
            except TooManyWaiting:
                raise  # 503 + Retry-After (app.py): a busy camera, not a dead one
            except FrameTimeout:
                if view.frame is None:
                    why = f"has delivered no frame (waited {self.timeout_s:g} s)"
                else:
                    age = view.frame.age_ns(self.cache.clock()) / 1e9
                    why = (f"delivers no live frame: its newest is {age:.1f} s old "
                           f"(the bound is {self.stale_after_s:g} s)")
                raise _not_live(cam, why, self.cache.view(cam).last_error) from None
        send_aged(resp, self.cache, frame)

    def fresh(self, cam: int) -> wire.Frame:
        """A frame captured after now; 503 naming the camera and its last error when none
        comes within the snap timeout — at once when its node is not heard from."""
        requested = self.cache.clock()
        view = self.cache.view(cam)
        if not view.node_alive:  # a camera its node reports down may be coming up: wait
            raise _not_live(cam, "is disconnected", view.last_error)
        try:
            return self.cache.snap(cam, self.timeout_s, requested_ns=requested)
        except TooManyWaiting:
            raise  # 503 + Retry-After (app.py): a busy camera, not a dead one
        except FrameTimeout:
            why = f"delivered no frame within {self.timeout_s:g} s of the request"
            raise _not_live(cam, why, self.cache.view(cam).last_error) from None


class TooManyStreams(falcon.HTTPServiceUnavailable):
    """503 when every stream slot is taken; the body names the configuration key that sets
    their number besides Falcon's title and description."""

    CONFIG_KEY = "gateway.max_streams"

    def __init__(self, limit: int, cam: int) -> None:
        super().__init__(title="Too many streams",
                         description=f"all {limit} MJPEG streams ({self.CONFIG_KEY}) are in use; "
                                     f"use /latest/{cam} for single frames, or raise {self.CONFIG_KEY}",
                         retry_after=5)
        self.limit = limit

    def to_dict(self, obj_type: type = dict) -> Any:
        body = super().to_dict(obj_type)
        body["config_key"] = self.CONFIG_KEY
        body["max_streams"] = self.limit
        return body


class Streams:
    """Starts MJPEG responses: the stream cap, the shutdown event, the client-gone probe."""

    def __init__(self, cache: FrameCache, slots: StreamSlots, stopping: threading.Event,
                 stats: StreamStats) -> None:
        self.cache = cache
        self.slots = slots
        self.stopping = stopping
        self.stats = stats

    def respond(self, req: falcon.Request, resp: falcon.Response, cam: int) -> None:
        self.cache.require(cam)
        fps = fps_param(req)
        resp.content_type = MJPEG_CONTENT_TYPE
        resp.set_headers(IMAGE_HEADERS)
        resp.set_header("Pragma", "no-cache")
        if req.method == "HEAD":
            # The headers a stream starts with — of unknown length, so no Content-Length —
            # and no stream slot.
            resp.stream = iter(())
            return
        if not self.slots.acquire():
            raise TooManyStreams(self.slots.limit, cam)
        resp.stream = MjpegStream(self.cache, cam, self.slots, self.stopping,
                                  connection=request_connection(req.env),
                                  stats=self.stats, max_fps=fps)


class Resource:
    """Every GET route answers HEAD with the same status and headers, without the body."""

    def on_head(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.on_get(req, resp, **params)  # type: ignore[attr-defined]


class CacheViewResource(Resource):
    """A JSON view of the cache: `/cameras` (registry), `/world`, `/scan` (scans)."""

    def __init__(self, view: Callable[[], Any]) -> None:
        self.view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.view()


class SnapResource(Resource):
    """A JPEG captured after the request arrived."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        send_jpeg(resp, self.frames.fresh(camera_id(cam_id)))


class LatestResource(Resource):
    def __init__(self, frames: Frames) -> None:
        self.frames = frames

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        self.frames.latest(resp, camera_id(cam_id))


def stream_or_snapshot(req: falcon.Request, resp: falcon.Response, frames: Frames,
                       streams: Streams, cam: int) -> None:
    """A stream route: MJPEG, or a live snapshot for `action=snapshot` (clients that turn a
    stream URL into a snapshot URL by rewriting its query, as MobileRaker does)."""
    action = req.get_param("action")
    if action is not None and action not in ACTIONS:
        raise falcon.HTTPBadRequest(title="Bad action",
                                    description=f"action must be snapshot or stream, got {_echo(action)}")
    if action == "snapshot":
        frames.live(resp, cam)
    else:
        streams.respond(req, resp, cam)


class CamStreamResource(Resource):
    def __init__(self, frames: Frames, streams: Streams) -> None:
        self.frames = frames
        self.streams = streams

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        stream_or_snapshot(req, resp, self.frames, self.streams, camera_id(cam_id))


class StatusResource(Resource):
    def __init__(self, cache: FrameCache, stats: StreamStats) -> None:
        self.cache = cache
        self.stats = stats

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        status = self.cache.status()
        streams = self.stats.snapshot()
        for cam, entry in status.items():
            counts = streams.get(int(cam), {"clients": 0, "delivered": 0, "skipped": 0})
            entry["health"].setdefault("gateway", {})["mjpeg"] = dict(counts)
        resp.media = status


class FrameResource(Resource):
    """A fresh frame as JPEG, or as raw BGR uint8 bytes decoded from it."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        cam = camera_id(cam_id)
        fmt = req.get_param("format") or "jpeg"
        if fmt not in FORMATS:
            raise falcon.HTTPBadRequest(title="Bad format",
                                        description=f"format must be jpeg or raw, got {_echo(fmt)}")
        requested = self.frames.cache.clock()
        frame = self.frames.fresh(cam)
        if fmt == "jpeg":
            send_jpeg(resp, frame)
            return
        resp.content_type = "application/octet-stream"
        resp.set_headers(IMAGE_HEADERS)
        if req.method == "HEAD":  # the headers only: the size the frame declares, no decode
            shape: tuple[int, ...] = (frame.h, frame.w, 3)
            dtype = "uint8"
            resp.content_length = frame.h * frame.w * 3
        else:
            # One decode shared by concurrent requests, few at once, sent without a copy
            # (rawframes.py); a ProtocolError (502) when the JPEG does not decode, RawBusy
            # (503 + Retry-After) when too many raw frames are out already.
            body = self.frames.raw.open(frame, captured_after_ns=requested)
            shape, dtype = body.shape, str(body.dtype)
            resp.stream = body
            resp.content_length = body.nbytes
        resp.set_headers({
            "X-Frame-Width": str(shape[1]), "X-Frame-Height": str(shape[0]),
            "X-Frame-Channels": str(shape[2] if len(shape) == 3 else 1),
            "X-Frame-Dtype": dtype, "X-Timestamp": f"{frame.t_capture_ns / 1e9:.6f}",
        })


class DefaultSnapshotResource(Resource):
    """`/snapshot.jpg[?cam=N]`: a live frame of the default (or the named) camera."""

    def __init__(self, frames: Frames, default_camera: int) -> None:
        self.frames = frames
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.frames.live(resp, camera_param(req, self.default_camera))


class DefaultStreamResource(Resource):
    """`/stream.mjpg[?cam=N]`: the default (or the named) camera's MJPEG stream."""

    def __init__(self, frames: Frames, streams: Streams, default_camera: int) -> None:
        self.frames = frames
        self.streams = streams
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        cam = camera_param(req, self.default_camera)
        stream_or_snapshot(req, resp, self.frames, self.streams, cam)


class RootResource(Resource):
    """`/`: mjpg-streamer's `?action=snapshot|stream[&cam=N]`, else the dashboard."""

    def __init__(self, frames: Frames, streams: Streams, default_camera: int) -> None:
        self.frames = frames
        self.streams = streams
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.get_param("action") is None:
            serve_static(resp, "index.html")
            return
        cam = camera_param(req, self.default_camera)
        stream_or_snapshot(req, resp, self.frames, self.streams, cam)


class StaticResource(Resource):
    """The dashboard's files under /static/ (and its icon at /favicon.ico)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str | None = None) -> None:
        serve_static(resp, self.name or name or "")


def serve_static(resp: falcon.Response, name: str) -> None:
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise falcon.HTTPNotFound(title="Not found", description=f"no dashboard file {_echo(name)}")
    file = package_files.files(__package__).joinpath("static", name)
    if not file.is_file():
        raise falcon.HTTPNotFound(title="Not found", description=f"no dashboard file {_echo(name)}")
    resp.content_type = STATIC_TYPES[suffix]
    resp.data = file.read_bytes()
    resp.set_header("Cache-Control", "no-cache")
