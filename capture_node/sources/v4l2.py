"""A USB/UVC camera through Video4Linux2 (OpenCV's VideoCapture with CAP_V4L2).

    [node.cameras.source]
    kind = "v4l2"
    device = "/dev/v4l/by-id/usb-046d_Logitech_BRIO_1234-video-index0"   # or "/dev/video0"
    fourcc = "MJPG"                 # ask for MJPEG (the default); "H264"; "YUYV" for raw
    controls = { autofocus = 0, focus = 30 }

The camera is asked for `fourcc` at the camera's resolution and fps. When it delivers MJPEG
and `passthrough` is on, OpenCV is told not to convert (CAP_PROP_CONVERT_RGB = 0, or
CAP_PROP_FORMAT = -1 on OpenCV builds that use that switch) and each buffer's bytes are the
frame: trimmed of the padding some cameras leave after EOI, given the standard Huffman tables
when the camera omits them (common in UVC MJPEG, and not every decoder supplies them), and
passed on — never decoded, never re-encoded. Otherwise OpenCV converts to BGR and the capture
loop encodes only when someone subscribes to JPEG.

With `fourcc = "H264"` (a camera that encodes H.264 itself) conversion is turned off the same
way and each buffer is one access unit (Annex B): checked to be one, its keyframe flag read
from its NAL units, the stream's SPS/PPS put in front of a keyframe that lacks them (cameras
that send them only once), and handed to the node as `rpicam`'s H.264 is — published on
`frame/{cam}/h264` untouched, decoded only while someone wants JPEG or raw. OpenCV cannot
decode H.264 from a V4L2 camera, so where it cannot hand over the raw buffers the source
fails to open, saying so.

The decisions (properties to set, passthrough or not, buffer → JPEG) are pure functions below;
opening a device needs one, which the tests here do not have.
"""

from __future__ import annotations

import array
import errno
import fcntl
import functools
import logging
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ...protocol.errors import ProtocolError
from ...protocol.jpeg import encode_jpeg, jpeg_size
from ...runtime.errors import ConfigError
from ...runtime.logonce import LogOnce
from ..errors import SourceError
from ..h264 import NAL_IDR, ParameterSets, nal_types
from ..source import Capture, ProbeReport, Source
from .jpeg_stream import check_jpeg

log = logging.getLogger(__name__)

# OpenCV's V4L2 backend waits this many seconds for a frame from a stalled camera (10 by
# default, read once at the first capture) and cannot be interrupted meanwhile; 1 s keeps a
# stalled camera detected, and the node's shutdown, within its 2 s. The environment may
# still set it.
os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")

Delivery = Literal["jpeg", "h264", "decoded"]

#: Camera controls a config may set, by the name v4l2-ctl users know → OpenCV property.
CONTROLS: dict[str, int] = {
    "brightness": cv2.CAP_PROP_BRIGHTNESS,
    "contrast": cv2.CAP_PROP_CONTRAST,
    "saturation": cv2.CAP_PROP_SATURATION,
    "hue": cv2.CAP_PROP_HUE,
    "gain": cv2.CAP_PROP_GAIN,
    "sharpness": cv2.CAP_PROP_SHARPNESS,
    "gamma": cv2.CAP_PROP_GAMMA,
    "backlight": cv2.CAP_PROP_BACKLIGHT,
    "autofocus": cv2.CAP_PROP_AUTOFOCUS,
    "focus": cv2.CAP_PROP_FOCUS,
    "zoom": cv2.CAP_PROP_ZOOM,
    "auto_exposure": cv2.CAP_PROP_AUTO_EXPOSURE,
    "exposure": cv2.CAP_PROP_EXPOSURE,
    "auto_white_balance": cv2.CAP_PROP_AUTO_WB,
    "white_balance_temperature": cv2.CAP_PROP_WB_TEMPERATURE,
}

JPEG_FOURCCS = frozenset({"MJPG", "JPEG"})
H264_FOURCC = "H264"
VCL = (1, 5)  # NAL unit types of coded slices: non-IDR, IDR


@dataclass(frozen=True, slots=True)
class Options:
    """The `[node.cameras.source]` table of a V4L2 camera (besides `kind`)."""

    device: str
    fourcc: str = "MJPG"
    passthrough: bool = True
    buffers: int = 1
    controls: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.device.startswith("/dev/"):
            raise ConfigError("device", f"must be a device path like /dev/video0 or "
                              f"/dev/v4l/by-id/…, got {self.device!r}")
        if len(self.fourcc) != 4 or not self.fourcc.isascii():
            raise ConfigError("fourcc", f"must be four ASCII characters like 'MJPG' or 'YUYV', "
                              f"got {self.fourcc!r}")
        if self.fourcc == H264_FOURCC and not self.passthrough:
            raise ConfigError("passthrough", "must be true with fourcc = 'H264': OpenCV cannot "
                              "decode a camera's H.264 (the node decodes it only for JPEG and raw)")
        if not 1 <= self.buffers <= 10:
            raise ConfigError("buffers", f"must be in 1..10, got {self.buffers!r}")
        for name in self.controls:
            if name not in CONTROLS:
                known = ", ".join(sorted(CONTROLS))
                raise ConfigError(f"controls.{name}", f"unknown control (known: {known})")


# -- decisions (pure) ----------------------------------------------------------------------------
def fourcc_code(name: str) -> int:
    """'MJPG' → the integer OpenCV's CAP_PROP_FOURCC uses."""
    return cv2.VideoWriter_fourcc(*name)


def fourcc_name(code: float) -> str:
    """The integer from CAP_PROP_FOURCC (or a V4L2 pixelformat) → 'MJPG'; '' for none."""
    value = int(code)
    if value <= 0:
        return ""
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).rstrip("\x00 ")


def capture_properties(options: Options, width: int, height: int, fps: float) -> list[tuple[int, float]]:
    """The (property, value) pairs to set after opening, in the order V4L2 needs them:
    pixel format first (it resets the stream), then size, rate, buffer count, controls."""
    props: list[tuple[int, float]] = [
        (cv2.CAP_PROP_FOURCC, float(fourcc_code(options.fourcc))),
        (cv2.CAP_PROP_FRAME_WIDTH, float(width)),
        (cv2.CAP_PROP_FRAME_HEIGHT, float(height)),
        (cv2.CAP_PROP_FPS, float(fps)),
        # Few buffers: a frame read late is not followed by a queue of older ones.
        (cv2.CAP_PROP_BUFFERSIZE, float(options.buffers)),
    ]
    props += [(CONTROLS[name], float(value)) for name, value in options.controls.items()]
    return props


def decide_delivery(requested: str, negotiated: str, passthrough: bool) -> tuple[Delivery, str]:
    """Pass the camera's JPEG bytes (or H.264 access units) through, or let OpenCV decode; with
    the reason, for the log."""
    if negotiated == H264_FOURCC:
        return "h264", f"camera delivers {negotiated}: passing its access units through"
    if negotiated in JPEG_FOURCCS:
        if passthrough:
            return "jpeg", f"camera delivers {negotiated}: passing its JPEGs through"
        return "decoded", f"camera delivers {negotiated}; passthrough is off: decoding"
    if requested in JPEG_FOURCCS or requested == H264_FOURCC:
        return "decoded", (f"asked for {requested}, camera delivers {negotiated or 'an unknown format'}: "
                           "capturing raw and converting to BGR")
    return "decoded", f"camera delivers {negotiated or 'an unknown format'}: converting to BGR"


def raw_mode_properties() -> list[tuple[int, float]]:
    """The switches that make OpenCV hand over undecoded buffers, tried in order: OpenCV 5's
    V4L2 backend reads CAP_PROP_CONVERT_RGB = 0; older builds read CAP_PROP_FORMAT = -1."""
    return [(cv2.CAP_PROP_CONVERT_RGB, 0.0), (cv2.CAP_PROP_FORMAT, -1.0)]


def without_raw_mode(device: str, delivery: Delivery, why: str, raw: bool) -> tuple[Delivery, str]:
    """The delivery once OpenCV has been asked for undecoded buffers (`raw`: it accepted).

    MJPEG falls back to OpenCV decoding it. H.264 cannot: OpenCV's V4L2 backend has no H.264
    decoder. With conversion on, an H264 buffer would be copied as it is into a BGR picture
    (opencv modules/videoio/src/cap_v4l.cpp: V4L2_PIX_FMT_H264 is not in convertableToRgb's
    list, so convertToRgb's default case memcpys the bitstream into the frame); only with
    conversion off does v4l2_create_frame's default case hand the buffer over as one row of
    `bytesused` bytes, as it does MJPEG. So that is refused at open, never decoded silently.
    """
    if raw or delivery == "decoded":
        return delivery, why
    if delivery == "jpeg":
        return "decoded", f"{why}; but this OpenCV build cannot hand over raw buffers"
    raise SourceError(f"{device}: the camera delivers H264, but this OpenCV build cannot hand over "
                      "its buffers undecoded (it accepts neither CAP_PROP_CONVERT_RGB = 0 nor "
                      "CAP_PROP_FORMAT = -1), and OpenCV cannot decode H.264 from a camera; "
                      "ask for fourcc = 'MJPG' instead")


@functools.cache
def standard_huffman_tables() -> bytes:
    """The DHT segment of the JPEG standard's example tables (ITU T.81 Annex K.3).

    UVC cameras commonly leave them out of MJPEG frames and rely on the decoder to assume
    them. libjpeg writes exactly these tables by default, so they are taken from a tiny
    encoded image rather than typed out.
    """
    sample = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    segments = [seg for marker, seg in _segments(sample) if marker == 0xC4]
    if not segments:
        raise ProtocolError("the JPEG encoder wrote no Huffman tables")
    return b"".join(segments)


def jpeg_from_buffer(buffer: bytes | np.ndarray) -> bytes:
    """A V4L2 MJPEG buffer → a complete, standalone JPEG; ProtocolError if it is not one.

    Padding after EOI is cut, and missing Huffman tables are inserted before the first SOS.
    """
    data = buffer.tobytes() if isinstance(buffer, np.ndarray) else bytes(buffer)
    if data[:2] != b"\xff\xd8":
        raise ProtocolError(f"buffer of {len(data)} bytes does not start with a JPEG SOI")
    end = data.rfind(b"\xff\xd9")
    if end < 0:
        raise ProtocolError(f"buffer of {len(data)} bytes has no JPEG EOI (a cut frame)")
    data = data[: end + 2]
    markers = [marker for marker, _ in _segments(data)]
    if 0xDA in markers and 0xC4 not in markers[: markers.index(0xDA)]:
        sos = _segment_offset(data, 0xDA)
        data = data[:sos] + standard_huffman_tables() + data[sos:]
    if not check_jpeg(data):
        raise ProtocolError(f"buffer of {len(data)} bytes is not a well-formed JPEG")
    return data


def h264_from_buffer(buffer: bytes | np.ndarray, parameter_sets: ParameterSets) -> tuple[bytes, bool]:
    """A V4L2 H264 buffer → (one access unit in Annex B, keyframe?); ProtocolError if it is not
    one. A keyframe without SPS/PPS gets the stream's last ones (`parameter_sets`, which also
    learns them from this buffer); one with none known yet is refused: nobody could decode it."""
    data = buffer.tobytes() if isinstance(buffer, np.ndarray) else bytes(buffer)
    if not (data.startswith(b"\0\0\1") or data.startswith(b"\0\0\0\1")):
        raise ProtocolError(f"buffer of {len(data)} bytes does not start with an H.264 start code")
    types = nal_types(data)
    if not any(kind in VCL for kind in types):
        raise ProtocolError(f"buffer of {len(data)} bytes holds no coded picture (NAL types {types})")
    key = NAL_IDR in types
    unit = parameter_sets.complete(data, key)
    if key and not parameter_sets.data:
        raise ProtocolError("a keyframe without SPS/PPS, and the camera has sent none yet")
    return unit, key


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment) for each header segment up to and including the first SOS."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        out.append((marker, data[i : i + 2 + length]))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def _segment_offset(data: bytes, wanted: int) -> int:
    i = 2
    while i + 4 <= len(data):
        if data[i + 1] == wanted:
            return i
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    raise ProtocolError(f"no marker {wanted:#04x}")


# -- what the device offers (VIDIOC_ENUM_FMT / VIDIOC_ENUM_FRAMESIZES, no v4l2-ctl needed) --------
VIDIOC_ENUM_FMT = 0xC0405602          # _IOWR('V', 2, struct v4l2_fmtdesc), 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A   # _IOWR('V', 74, struct v4l2_frmsizeenum), 44 bytes
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_FRMSIZE_TYPE_DISCRETE = 1
_FMTDESC = struct.Struct("=III32sII12x")      # index, type, flags, description, pixelformat, mbus
_FRMSIZE = struct.Struct("=III6I8x")          # index, pixel_format, type, union (6 × u32)


def parse_fmtdesc(raw: bytes) -> tuple[str, str]:
    """A filled v4l2_fmtdesc → (fourcc, description)."""
    _index, _type, _flags, description, pixelformat, _mbus = _FMTDESC.unpack(raw)
    return fourcc_name(pixelformat), description.split(b"\x00", 1)[0].decode("ascii", "replace")


def parse_frmsize(raw: bytes) -> list[tuple[int, int]]:
    """A filled v4l2_frmsizeenum → its discrete size, or the corners of a stepwise range."""
    _index, _fmt, kind, *union = _FRMSIZE.unpack(raw)
    if kind == V4L2_FRMSIZE_TYPE_DISCRETE:
        return [(union[0], union[1])]
    min_w, max_w, _step_w, min_h, max_h, _step_h = union
    return [(min_w, min_h), (max_w, max_h)]


def enumerate_formats(device: str) -> dict[str, list[tuple[int, int]]]:
    """{fourcc: [(w, h), …]} the device offers; needs a device (OSError otherwise)."""
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    try:
        formats: dict[str, list[tuple[int, int]]] = {}
        for index in range(64):
            buf = array.array("B", _FMTDESC.pack(index, V4L2_BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0))
            try:
                fcntl.ioctl(fd, VIDIOC_ENUM_FMT, buf)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    break  # the end of the list
                raise
            fourcc, _ = parse_fmtdesc(buf.tobytes())
            pixelformat = _FMTDESC.unpack(buf.tobytes())[4]
            sizes: list[tuple[int, int]] = []
            for size_index in range(256):
                sbuf = array.array("B", _FRMSIZE.pack(size_index, pixelformat, 0, 0, 0, 0, 0, 0, 0))
                try:
                    fcntl.ioctl(fd, VIDIOC_ENUM_FRAMESIZES, sbuf)
                except OSError:
                    break
                sizes += parse_frmsize(sbuf.tobytes())
                if _FRMSIZE.unpack(sbuf.tobytes())[2] != V4L2_FRMSIZE_TYPE_DISCRETE:
                    break
            formats[fourcc] = sizes
        return formats
    finally:
        os.close(fd)


def opencv_target(device: str) -> int | str:
    """What to hand cv2.VideoCapture: /dev/videoN (also reached through a /dev/v4l/by-id or
    by-path link) as the index N, which every OpenCV build's V4L2 backend opens; else the path."""
    match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(device))
    return int(match.group(1)) if match else device


def card_name(device: str) -> str:
    """The camera's name from sysfs (/sys/class/video4linux/videoN/name), '' if unknown."""
    node = Path(os.path.realpath(device)).name
    try:
        return (Path("/sys/class/video4linux") / node / "name").read_text().strip()
    except OSError:
        return ""


# -- the source ----------------------------------------------------------------------------------
class V4l2Source(Source):
    """A V4L2 camera: its MJPEG or H.264 passed through, or its raw frames converted to BGR."""

    kind = "v4l2"

    def __init__(self, options: Options, width: int, height: int, fps: float) -> None:
        self.options = options
        self.width, self.height, self.fps = width, height, fps
        self.delivery: Delivery = "decoded"
        self.negotiated: tuple[str, int, int, float] | None = None
        self.bad_frames = 0
        self.parameter_sets = ParameterSets()
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self.failures = LogOnce(log)

    @property
    def device(self) -> str:
        return self.options.device

    def open(self) -> None:
        self.close()
        if not os.path.exists(self.options.device):
            raise SourceError(f"{self.options.device}: no such device (unplugged?)")
        cap = cv2.VideoCapture(opencv_target(self.options.device), cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.options.device}: OpenCV's V4L2 backend cannot open it "
                              "(busy, no permission — is the user in the 'video' group? — or not a camera)")
        for prop, value in capture_properties(self.options, self.width, self.height, self.fps):
            if not cap.set(prop, value):
                self.failures.info(f"set{prop}", "%s: the camera did not accept property %d = %g",
                                   self.options.device, prop, value)
        negotiated = fourcc_name(cap.get(cv2.CAP_PROP_FOURCC))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.negotiated = (negotiated, w, h, float(cap.get(cv2.CAP_PROP_FPS)))
        self.delivery, why = decide_delivery(self.options.fourcc, negotiated, self.options.passthrough)
        raw = self.delivery != "decoded" and any(cap.set(p, v) for p, v in raw_mode_properties())
        try:
            self.delivery, why = without_raw_mode(self.options.device, self.delivery, why, raw)
        except SourceError:
            cap.release()
            raise
        if (w, h) != (self.width, self.height):
            why += f"; asked for {self.width}x{self.height}, camera gives {w}x{h}"
        log.info("%s: %s", self.options.device, why)
        with self._lock:
            self._cap = cap

    def read(self, timeout: float) -> Capture:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                cap = self._cap
                if cap is None:
                    raise SourceError(f"{self.options.device}: not open")
                ok, buffer = cap.read()  # blocks for one frame period at most on a live camera
            t_capture_ns = time.time_ns()
            if not ok or buffer is None:
                raise SourceError(f"{self.options.device}: no frame (unplugged, or the stream stopped)")
            try:
                capture = self._capture(buffer, t_capture_ns)
                self.failures.recovered("bad frame")
                return capture
            except ProtocolError as exc:
                # A corrupt frame (USB bandwidth, a cable) is skipped, not published.
                self.bad_frames += 1
                self.failures.warning("bad frame", "%s: skipping a bad frame: %s (logged once until a "
                                      "good one; see bad_frames)", self.options.device, exc)
                if time.monotonic() > deadline:
                    raise SourceError(f"{self.options.device}: only bad frames for {timeout:g} s") from exc

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def probe(self) -> ProbeReport:
        start = time.monotonic()
        details: dict[str, object] = {"card": card_name(self.options.device)}
        try:
            offered = enumerate_formats(self.options.device)
        except OSError as exc:
            offered = {}
            details["enumerate_error"] = exc.strerror or str(exc)
        formats = sorted(offered)
        resolutions = sorted({size for sizes in offered.values() for size in sizes}, reverse=True)
        details["sizes_by_format"] = {k: [list(s) for s in v] for k, v in offered.items()}
        try:
            self.open()
            self.read(timeout=5.0)
            details["negotiated"] = list(self.negotiated or ())
            details["delivery"] = self.delivery
            return ProbeReport(opened=True, device=self.device, formats=formats, resolutions=resolutions,
                               first_frame_ms=(time.monotonic() - start) * 1000, details=details)
        except SourceError as exc:
            return ProbeReport(opened=False, device=self.device, formats=formats, resolutions=resolutions,
                               error=str(exc), details=details)
        finally:
            self.close()

    def _capture(self, buffer: np.ndarray, t_capture_ns: int) -> Capture:
        if self.delivery == "h264":
            if buffer.ndim > 2 or (buffer.ndim == 2 and buffer.shape[0] != 1):
                raise SourceError(f"{self.options.device}: OpenCV handed over a converted "
                                  f"{buffer.shape} picture, not the camera's H.264")
            unit, key = h264_from_buffer(buffer, self.parameter_sets)
            _, w, h, _ = self.negotiated or ("", self.width, self.height, 0.0)
            return Capture(t_capture_ns=t_capture_ns, w=w, h=h, h264=unit, key=key)
        if self.delivery == "jpeg" and buffer.ndim <= 2 and (buffer.ndim == 1 or buffer.shape[0] == 1):
            jpeg = jpeg_from_buffer(buffer)
            w, h = jpeg_size(jpeg)
            return Capture(t_capture_ns=t_capture_ns, w=w, h=h, jpeg=jpeg)
        h, w = buffer.shape[:2]
        return Capture(t_capture_ns=t_capture_ns, w=w, h=h, image=buffer)


def create(options: Options, camera: object) -> V4l2Source:
    """A V4L2 source at the camera's resolution and fps."""
    width, height = camera.resolution  # type: ignore[attr-defined]
    return V4l2Source(options, int(width), int(height), float(camera.fps))  # type: ignore[attr-defined]
