"""camfabric.client: the gateway's HTTP API for HTTP consumers — the seed's `cam_snap()` helper.

    from camfabric.client import cam_snap, latest, frame
    jpeg = cam_snap(0)                       # a JPEG captured after the call
    shot = latest(2)                         # the cached JPEG at once: shot.jpeg, shot.age_ms
    image = frame(1)                         # numpy (h, w, 3) BGR uint8

The module functions share one `GatewayClient` on `$CAMFABRIC_URL` (default
http://127.0.0.1:8081); make your own for another gateway. One `requests.Session` per client,
and a deadline on every request: `connect_timeout` to connect and `read_timeout` for the whole
request, answer included (it outlasts the gateway's snap wait), so a server that drips its body
cannot hold a caller; a body beyond `max_body` bytes is refused.

Errors, all `CamfabricError`:

    CamfabricError
    ├── UnknownCamera            404: no node announces that camera (`.cam`)
    ├── FrameTimeout
    │   └── FrameUnavailable     503: no (fresh) frame yet; `.retry_after` s, from Retry-After
    └── GatewayError             any other answer that cannot be used (`.status`, `.description`)
        ├── GatewayUnreachable   refused, reset, timed out, unknown host (`.url`)
        └── InvalidRequest       a bad camera id or format, refused here or answered 400
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from camfabric.protocol.errors import FrameTimeout, UnknownCamera
from camfabric.protocol.jpeg import decode_jpeg, is_complete_jpeg
from camfabric.runtime.errors import CamfabricError

DEFAULT_URL = "http://127.0.0.1:8081"
URL_ENV = "CAMFABRIC_URL"
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0  # the gateway waits up to 2 s (its snap_timeout_s) for a fresh frame
MAX_BODY = 256 * 1024 * 1024  # a raw 1920x1080 frame is 6 MiB
CHUNK = 256 * 1024
FORMATS = ("raw", "jpeg")


class GatewayError(CamfabricError):
    """The gateway answered something this client cannot use."""

    def __init__(self, message: str, status: int | None = None, description: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.description = description


class GatewayUnreachable(GatewayError, ConnectionError):
    """No answer from the gateway: refused, reset, timed out or an unknown host."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class InvalidRequest(GatewayError, ValueError):
    """A camera id or format the API does not take (refused here, or answered 400)."""


class FrameUnavailable(FrameTimeout):
    """The camera has no (fresh) frame yet; try again after `retry_after` seconds (None: unsaid)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class LatestFrame:
    """A cached JPEG as `/latest` served it: its age on arrival, and when it was captured.

    `age_ms` is the gateway's `X-Frame-Age-Ms`; `age_now_ms()` adds the time since it arrived
    here (this host's monotonic clock), so a kept frame is never taken for a fresher one.
    """

    jpeg: bytes
    age_ms: int
    t_capture: float | None
    received: float = field(default_factory=time.monotonic, repr=False)

    def age_now_ms(self) -> float:
        return self.age_ms + (time.monotonic() - self.received) * 1000

    @property
    def image(self) -> np.ndarray:
        """The JPEG decoded: numpy (h, w, 3) BGR uint8."""
        return decode_jpeg(self.jpeg)


class GatewayClient:
    """The gateway's HTTP API over one `requests.Session`, with a timeout on every request."""

    def __init__(self, url: str | None = None, *, session: requests.Session | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 max_body: int = MAX_BODY) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/") + "/"
        if not self.url.startswith(("http://", "https://")):
            raise InvalidRequest(f"gateway URL must start with http:// or https://, got {url!r}")
        self.session = session or requests.Session()
        self.timeout = (connect_timeout, read_timeout)
        self.max_body = max_body

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API --------------------------------------------------------------------------------
    def cam_snap(self, cam: int) -> bytes:
        """A JPEG of camera `cam` captured after this call (`GET /snap/{cam}`)."""
        return _jpeg(self._get(f"snap/{_cam(cam)}", cam), f"/snap/{cam}")

    def latest(self, cam: int) -> LatestFrame:
        """The newest cached JPEG of `cam` at once, with its age (`GET /latest/{cam}`)."""
        resp = self._get(f"latest/{_cam(cam)}", cam)
        try:
            age_ms = int(resp.headers["X-Frame-Age-Ms"])
        except (KeyError, ValueError) as exc:
            raise GatewayError(f"/latest/{cam} answered without a usable X-Frame-Age-Ms",
                               resp.status) from exc
        return LatestFrame(_jpeg(resp, f"/latest/{cam}"), age_ms, _float(resp.headers.get("X-Timestamp")))

    def frame(self, cam: int, format: str = "raw") -> np.ndarray:
        """A fresh frame of `cam` as numpy (h, w, 3) BGR uint8 (`GET /frame/{cam}`).

        `format="raw"` moves the pixels as they are; `"jpeg"` moves a JPEG, decoded here.
        """
        if format not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        resp = self._get(f"frame/{_cam(cam)}", cam, params={"format": format})
        if format == "jpeg":
            return decode_jpeg(_jpeg(resp, f"/frame/{cam}"))
        try:
            shape = tuple(int(resp.headers[f"X-Frame-{k}"]) for k in ("Height", "Width", "Channels"))
            dtype = np.dtype(resp.headers["X-Frame-Dtype"])
        except (KeyError, ValueError, TypeError) as exc:
            raise GatewayError(f"/frame/{cam}?format=raw answered without usable X-Frame-* headers",
                               resp.status) from exc
        expected = int(np.prod(shape)) * dtype.itemsize
        if len(resp.body) != expected or min(shape) < 1:
            raise GatewayError(f"/frame/{cam}?format=raw: {len(resp.body)} bytes for "
                               f"{shape[1]}x{shape[0]}x{shape[2]} {dtype}", resp.status)
        image = np.frombuffer(resp.body, dtype=dtype).reshape(shape)
        return image if shape[2] > 1 else image[:, :, 0]

    def cameras(self) -> dict[int, dict[str, Any]]:
        """The camera registry (`GET /cameras`), keyed by camera id."""
        return _by_camera(self._json("cameras"), "cameras")

    def status(self) -> dict[int, dict[str, Any]]:
        """Each camera's connection, size, fps and health (`GET /status`), keyed by camera id."""
        return _by_camera(self._json("status"), "status")

    def world(self) -> dict[str, Any]:
        """The tracker's latest world model (`GET /world`; empty when no tracker runs)."""
        body = self._json("world")
        if not isinstance(body, dict):
            raise GatewayError(f"/world answered {type(body).__name__}, not an object")
        return body

    # -- the seam to requests -------------------------------------------------------------------
    def _json(self, path: str) -> Any:
        resp = self._get(path, None)
        try:
            return resp.json()
        except ValueError as exc:
            raise GatewayError(f"/{path} answered something that is not JSON", resp.status) from exc

    def _get(self, path: str, cam: int | None, params: dict[str, str] | None = None) -> Answer:
        resp = self._fetch(path, params)
        if resp.status == 200:
            return resp
        description = _description(resp)
        if resp.status == 404 and cam is not None:
            raise UnknownCamera(cam)
        if resp.status == 503:
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            raise FrameUnavailable(f"/{path}: {description or 'no frame yet'}"
                                   + (f" (retry after {retry_after:g} s)" if retry_after is not None else ""),
                                   retry_after)
        kind = InvalidRequest if resp.status == 400 else GatewayError
        raise kind(f"/{path} answered {resp.status}: {description or resp.reason}",
                   resp.status, description)

    def _fetch(self, path: str, params: dict[str, str] | None) -> Answer:
        """GET `path`, the whole answer within the read timeout and `max_body` bytes."""
        deadline = time.monotonic() + self.timeout[1]
        late = f"no whole answer from the gateway at {self.url} within {self.timeout[1]:g} s ({path})"
        try:
            with self.session.get(self.url + path, params=params, timeout=self.timeout,
                                  stream=True) as resp:
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_body:
                    raise GatewayError(f"/{path} announced {declared} bytes, more than the "
                                       f"{self.max_body} this client takes", resp.status_code)
                chunks, size = [], 0
                for chunk in _pieces(resp):
                    size += len(chunk)
                    if size > self.max_body:
                        raise GatewayError(f"/{path} sent more than the {self.max_body} bytes this "
                                           "client takes", resp.status_code)
                    if time.monotonic() > deadline:
                        raise GatewayUnreachable(late, self.url)
                    chunks.append(chunk)
                return Answer(resp.status_code, resp.reason or "", resp.headers, b"".join(chunks))
        except requests.Timeout as exc:
            raise GatewayUnreachable(late, self.url) from exc
        except requests.RequestException as exc:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.url}: "
                                     f"{type(exc).__name__}", self.url) from exc


def _pieces(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: whatever each read brings, so a deadline is checked between
    reads (urllib3's `read1`; `iter_content` waits for whole chunks)."""
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:
        yield from resp.iter_content(CHUNK)
        return
    while piece := read1(CHUNK, decode_content=True):
        yield piece


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole: status, reason, headers (case-insensitive) and body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _cam(cam: int) -> int:
    if isinstance(cam, bool) or not isinstance(cam, int | np.integer) or cam < 0:
        raise InvalidRequest(f"a camera id is an integer >= 0, got {cam!r}")
    return int(cam)


def _jpeg(resp: Answer, what: str) -> bytes:
    if not is_complete_jpeg(resp.body):
        raise GatewayError(f"{what} answered {len(resp.body)} bytes that are not a whole JPEG",
                           resp.status)
    return resp.body


def _by_camera(body: Any, what: str) -> dict[int, dict[str, Any]]:
    if not isinstance(body, dict) or not all(k.isdigit() and isinstance(v, dict) for k, v in body.items()):
        raise GatewayError(f"/{what} answered something other than an object of cameras")
    return {int(k): v for k, v in body.items()}


def _description(resp: Answer) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("description") or body.get("title") or "") if isinstance(body, dict) else ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# -- the seed's helpers: one shared client ------------------------------------------------------
_shared: GatewayClient | None = None
_shared_lock = threading.Lock()


def default_client() -> GatewayClient:
    """The client the module functions use, on `$CAMFABRIC_URL` or http://127.0.0.1:8081."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GatewayClient()
        return _shared


def cam_snap(cam: int) -> bytes:
    """A JPEG of camera `cam` captured after this call — the seed's `cam_snap()` helper."""
    return default_client().cam_snap(cam)


def latest(cam: int) -> LatestFrame:
    """The newest cached JPEG of `cam` with its age (`LatestFrame.jpeg`, `.age_ms`)."""
    return default_client().latest(cam)


def frame(cam: int, format: str = "raw") -> np.ndarray:
    """A fresh frame of `cam` as numpy (h, w, 3) BGR uint8."""
    return default_client().frame(cam, format)


def cameras() -> dict[int, dict[str, Any]]:
    """The camera registry, keyed by camera id."""
    return default_client().cameras()


def status() -> dict[int, dict[str, Any]]:
    """Each camera's connection and health, keyed by camera id."""
    return default_client().status()


def world() -> dict[str, Any]:
    """The tracker's latest world model."""
    return default_client().world()


__all__ = [
    "DEFAULT_URL",
    "FrameUnavailable",
    "GatewayClient",
    "GatewayError",
    "GatewayUnreachable",
    "InvalidRequest",
    "LatestFrame",
    "UnknownCamera",
    "cam_snap",
    "cameras",
    "default_client",
    "frame",
    "latest",
    "status",
    "world",
]
