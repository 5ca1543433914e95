"""Falcon resources of the gateway's HTTP API (ARCHITECTURE.md, "HTTP API").

Each resource is a small class with `on_get`. Domain errors (`UnknownCamera`, `FrameTimeout`,
`ProtocolError`) are raised as they are and mapped to HTTP once, in `app.py`.
"""

from __future__ import annotations

import threading
from importlib import resources as package_files

import falcon

from ..protocol import wire
from .cache import FrameCache
from .mjpeg import CONTENT_TYPE as MJPEG_CONTENT_TYPE
from .mjpeg import MjpegStream, StreamSlots

IMAGE_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"}
RETRY_AFTER_S = 1
FORMATS = ("jpeg", "raw")
STATIC_TYPES = {".html": falcon.MEDIA_HTML, ".js": falcon.MEDIA_JS, ".css": "text/css",
                ".svg": "image/svg+xml"}


def camera_id(value: str | None, what: str = "camera id") -> int:
    """The integer camera id in `value`, or 400 naming what was wrong."""
    if value is None or not (value.isascii() and value.isdigit()):
        raise falcon.HTTPBadRequest(title="Bad camera id",
                                    description=f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def send_jpeg(resp: falcon.Response, frame: wire.Frame) -> None:
    resp.content_type = "image/jpeg"
    resp.data = bytes(frame.data)
    resp.set_headers(IMAGE_HEADERS)
    resp.set_header("X-Timestamp", f"{frame.t_capture_ns / 1e9:.6f}")


def send_latest(resp: falcon.Response, cache: FrameCache, cam: int) -> None:
    """The cached newest JPEG with X-Frame-Age-Ms, or 503 + Retry-After before the first frame."""
    frame = cache.latest(cam)
    if frame is None:
        raise falcon.HTTPServiceUnavailable(
            title="No frame yet",
            description=f"camera {cam} has not delivered a frame yet; retry shortly",
            retry_after=RETRY_AFTER_S,
        )
    send_jpeg(resp, frame)
    resp.set_header("X-Frame-Age-Ms", str(round(frame.age_ns(cache.clock()) / 1e6)))


class Streams:
    """Starts MJPEG responses: the stream cap, the shutdown event, the client-gone probe."""

    def __init__(self, cache: FrameCache, slots: StreamSlots, stopping: threading.Event) -> None:
        self.cache = cache
        self.slots = slots
        self.stopping = stopping

    def respond(self, req: falcon.Request, resp: falcon.Response, cam: int) -> None:
        self.cache.require(cam)
        if not self.slots.acquire():
            raise falcon.HTTPServiceUnavailable(
                title="Too many streams",
                description=f"all {self.slots.limit} MJPEG streams are in use; use /latest/{cam} "
                            "for single frames or raise gateway.max_streams",
                retry_after=5,
            )
        resp.content_type = MJPEG_CONTENT_TYPE
        resp.set_headers(IMAGE_HEADERS)
        resp.set_header("Pragma", "no-cache")
        resp.stream = MjpegStream(self.cache, cam, self.slots, self.stopping,
                                  client_gone=req.env.get("waitress.client_disconnected"))


class CamerasResource:
    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.cache.registry()


class SnapResource:
    """A JPEG captured after the request arrived."""

    def __init__(self, cache: FrameCache, timeout_s: float) -> None:
        self.cache = cache
        self.timeout_s = timeout_s

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        requested = self.cache.clock()
        cam = camera_id(cam_id)
        send_jpeg(resp, self.cache.snap(cam, self.timeout_s, requested_ns=requested))


class LatestResource:
    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        send_latest(resp, self.cache, camera_id(cam_id))


class CamStreamResource:
    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        self.streams.respond(req, resp, camera_id(cam_id))


class StatusResource:
    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.cache.status()


class FrameResource:
    """A fresh frame as JPEG, or as raw BGR uint8 bytes decoded from it."""

    def __init__(self, cache: FrameCache, timeout_s: float) -> None:
        self.cache = cache
        self.timeout_s = timeout_s

    def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        requested = self.cache.clock()
        cam = camera_id(cam_id)
        fmt = req.get_param("format") or "jpeg"
        if fmt not in FORMATS:
            raise falcon.HTTPBadRequest(title="Bad format",
                                        description=f"format must be jpeg or raw, got {fmt!r}")
        frame = self.cache.snap(cam, self.timeout_s, requested_ns=requested)
        if fmt == "jpeg":
            send_jpeg(resp, frame)
            return
        image = frame.image  # a ProtocolError (502) when the JPEG does not decode
        resp.content_type = "application/octet-stream"
        resp.data = image.tobytes()
        resp.set_headers(IMAGE_HEADERS)
        resp.set_headers({
            "X-Frame-Width": str(image.shape[1]), "X-Frame-Height": str(image.shape[0]),
            "X-Frame-Channels": str(image.shape[2] if image.ndim == 3 else 1),
            "X-Frame-Dtype": str(image.dtype), "X-Timestamp": f"{frame.t_capture_ns / 1e9:.6f}",
        })


class WorldResource:
    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.cache.world()


class ScanResource:
    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.cache.scans()


class DefaultSnapshotResource:
    """`/snapshot.jpg`: the default camera's cached frame (503 until the first one)."""

    def __init__(self, cache: FrameCache, default_camera: int) -> None:
        self.cache = cache
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_latest(resp, self.cache, self.default_camera)


class DefaultStreamResource:
    """`/stream.mjpg`: the default camera's MJPEG stream."""

    def __init__(self, streams: Streams, default_camera: int) -> None:
        self.streams = streams
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.streams.respond(req, resp, self.default_camera)


class RootResource:
    """`/`: mjpg-streamer's `?action=snapshot|stream[&cam=N]`, else the dashboard."""

    def __init__(self, cache: FrameCache, streams: Streams, default_camera: int) -> None:
        self.cache = cache
        self.streams = streams
        self.default_camera = default_camera

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        action = req.get_param("action")
        if action is None:
            serve_static(resp, "index.html")
            return
        raw_cam = req.get_param("cam")
        cam = self.default_camera if raw_cam is None else camera_id(raw_cam, "cam")
        if action == "snapshot":
            send_latest(resp, self.cache, cam)
        elif action == "stream":
            self.streams.respond(req, resp, cam)
        else:
            raise falcon.HTTPBadRequest(title="Bad action",
                                        description=f"action must be snapshot or stream, got {action!r}")


class StaticResource:
    """The dashboard's files under /static/."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        serve_static(resp, name)


def serve_static(resp: falcon.Response, name: str) -> None:
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise falcon.HTTPNotFound(title="Not found", description=f"no dashboard file {name!r}")
    file = package_files.files(__package__).joinpath("static", name)
    if not file.is_file():
        raise falcon.HTTPNotFound(title="Not found", description=f"no dashboard file {name!r}")
    resp.content_type = STATIC_TYPES[suffix]
    resp.data = file.read_bytes()
    resp.set_header("Cache-Control", "no-cache")
