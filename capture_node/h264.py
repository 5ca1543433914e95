"""One camera's H.264 stream, encoded from the same captures as every other encoding.

`H264Encoder` turns pictures into access units (Annex B), one per capture, while someone
subscribes to `frame/{cam}/h264`; the capture loop closes it as soon as nobody does, so a
node with no H.264 subscriber runs no encoder at all. Encoding is tuned for live view: no
B-frames (an access unit leaves as soon as its picture is in), a keyframe at least every
`gop_s` seconds, SPS and PPS in front of every keyframe, so a viewer can start at any of them.
`force_keyframe()` (a new subscriber arrived) makes the next access unit a keyframe, so a late
joiner starts decoding at once instead of waiting out the GOP.

The codec is the first of `codecs` that opens: `h264_v4l2m2m` (the Raspberry Pi's hardware
encoder, through V4L2) where the hardware has it, else `libx264` with the zerolatency tune.
PyAV (FFmpeg) is an optional dependency (the `webrtc` extra): without it the H.264 topic is
never produced and a subscriber to it hears nothing but the reason, logged once on the node.
"""

from __future__ import annotations

import fractions
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..runtime.logonce import LogOnce

CODECS = ("h264_v4l2m2m", "libx264")
GOP_S = 1.0
CLOCK_RATE = 90_000  # RTP's video clock; the pts of every access unit is on it
NAL_SPS, NAL_PPS, NAL_IDR = 7, 8, 5
INSTALL_HINT = "pip install 'camfabric[webrtc]' (PyAV and aiortc)"

try:  # an optional dependency: see the module docstring
    import av
except ImportError:  # pragma: no cover - depends on the installation
    av = None


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded picture: Annex B bytes, whether it is a keyframe, and which capture it is."""

    data: bytes
    key: bool
    seq: int
    t_capture_ns: int
    w: int
    h: int


def available() -> bool:
    """True when PyAV is installed, so H.264 can be encoded here."""
    return av is not None


def nal_types(data: bytes) -> list[int]:
    """The NAL unit types in an Annex B access unit, in order."""
    types = []
    start = data.find(b"\0\0\1")
    while start >= 0 and start + 3 < len(data):
        types.append(data[start + 3] & 0x1F)
        start = data.find(b"\0\0\1", start + 3)
    return types


class ParameterSets:
    """The newest SPS/PPS of one stream, put in front of each keyframe that comes without them.

    Some encoders (and many UVC cameras) send SPS/PPS once, at the start; the wire format
    promises them with every keyframe, so a late joiner can start decoding at any of them.
    """

    def __init__(self) -> None:
        self.data = b""  # the NAL units in front of the last slice that carried an SPS

    def complete(self, unit: bytes, key: bool) -> bytes:
        """`unit` (Annex B), with the stream's SPS/PPS in front if it is a keyframe lacking them."""
        types = nal_types(unit)
        if NAL_SPS in types:
            self.data = unit[: _first_slice(unit)]
        elif key and self.data:
            return self.data + unit
        return unit


class H264Encoder:
    """An H.264 encoder for one camera's pictures (BGR or gray uint8), opened on first use."""

    def __init__(self, fps: float, *, gop_s: float = GOP_S, codecs: tuple[str, ...] = CODECS,
                 log: logging.Logger | None = None) -> None:
        self.fps = fps
        self.gop = max(1, round(fps * gop_s))
        self.codecs = codecs
        self.log = log or logging.getLogger(__name__)
        self.failures = LogOnce(self.log)
        self.codec_name = ""
        self.encodes = 0  # pictures handed to the encoder, over its whole life
        self._context: Any = None
        self._size: tuple[int, int] = (0, 0)
        self._t0_ns = 0
        self._last_pts = -1
        self._captures: dict[int, tuple[int, int]] = {}  # pts -> (seq, t_capture_ns)
        self._parameter_sets = ParameterSets()
        self._force_key = threading.Event()

    @property
    def running(self) -> bool:
        return self._context is not None

    def force_keyframe(self) -> None:
        """Make the next access unit a keyframe (thread-safe)."""
        self._force_key.set()

    def encode(self, picture: np.ndarray, seq: int, t_capture_ns: int) -> list[AccessUnit]:
        """The access units `picture` completes (one with the encoders used here; none while a
        hardware encoder fills its pipeline). Raises RuntimeError when no codec opens."""
        if av is None:
            raise RuntimeError(f"H.264 needs PyAV, which is not installed: {INSTALL_HINT}")
        h, w = picture.shape[:2]
        w, h = w & ~1, h & ~1  # 4:2:0 needs even sizes; an odd last row or column is left out
        if (w, h) != self._size:
            self.close()
        if self._context is None:
            self._open(w, h, t_capture_ns)
        image = np.ascontiguousarray(picture[:h, :w])
        frame = av.VideoFrame.from_ndarray(image, format="bgr24" if image.ndim == 3 else "gray")
        frame = frame.reformat(format="yuv420p")
        pts = max(self._last_pts + 1, (t_capture_ns - self._t0_ns) * CLOCK_RATE // 1_000_000_000)
        self._last_pts = frame.pts = pts
        if self._force_key.is_set():
            self._force_key.clear()
            frame.pict_type = av.video.frame.PictureType.I
        self._captures[pts] = (seq, t_capture_ns)
        self.encodes += 1
        return self._units(self._context.encode(frame))

    def close(self) -> None:
        """Drop the encoder (nobody subscribes); the next `encode` opens a fresh one, which
        starts with a keyframe."""
        self._context = None
        self._captures.clear()
        self._size = (0, 0)

    def _open(self, w: int, h: int, t_capture_ns: int) -> None:
        errors = []
        for name in self.codecs:
            try:
                self._context = self._create(name, w, h)
            except Exception as exc:  # FFmpeg refuses a codec it lacks or hardware it cannot find
                errors.append(f"{name}: {exc}")
                continue
            if name != self.codec_name:
                self.log.info("H.264 encoding %dx%d at %g fps with %s (a keyframe every %d "
                              "frames)", w, h, self.fps, name, self.gop)
            self.codec_name = name
            self._size = (w, h)
            self._t0_ns = t_capture_ns
            self._last_pts = -1
            self._force_key.clear()  # a new encoder starts with a keyframe anyway
            return
        raise RuntimeError(f"no H.264 encoder opens here ({'; '.join(errors)})")

    def _create(self, name: str, w: int, h: int) -> Any:
        context = av.CodecContext.create(name, "w")
        context.width, context.height = w, h
        context.pix_fmt = "yuv420p"
        context.time_base = fractions.Fraction(1, CLOCK_RATE)
        context.framerate = fractions.Fraction(self.fps).limit_denominator(1000)
        context.gop_size = self.gop
        context.max_b_frames = 0
        if name == "libx264":
            context.options = {"preset": "ultrafast", "tune": "zerolatency",
                               "x264-params": "repeat-headers=1:forced-idr=1"}
        context.open()
        return context

    def _units(self, packets: list[Any]) -> list[AccessUnit]:
        units = []
        for packet in packets:
            data = bytes(packet)
            seq, t_capture_ns = self._captures.pop(packet.pts, (0, 0))
            if not seq:
                continue  # not one of ours (cannot happen with a pts-preserving encoder)
            key = bool(packet.is_keyframe) or NAL_IDR in nal_types(data)
            data = self._parameter_sets.complete(data, key)
            units.append(AccessUnit(data, key, seq, t_capture_ns, *self._size))
        # A picture the encoder dropped never comes out; keep the map small regardless.
        for stale in [pts for pts in self._captures if pts < self._last_pts - 4 * self.gop]:
            del self._captures[stale]
        return units


class H264Decoder:
    """Pictures from a camera that delivers H.264 itself, for its JPEG and raw consumers.

    Fed every access unit in order while someone wants a picture, starting at a keyframe (a
    decoder cannot start anywhere else); `close()` when nobody does, so nothing is decoded
    for nobody.
    """

    def __init__(self) -> None:
        self._context: Any = None

    @property
    def running(self) -> bool:
        return self._context is not None

    def decode(self, data: bytes, key: bool) -> np.ndarray | None:
        """The BGR picture `data` completes, or None (before the first keyframe)."""
        if av is None:
            raise RuntimeError(f"decoding H.264 needs PyAV, which is not installed: {INSTALL_HINT}")
        if self._context is None:
            if not key:
                return None
            self._context = av.CodecContext.create("h264", "r")
        pictures = self._context.decode(av.Packet(data))
        return pictures[-1].to_ndarray(format="bgr24") if pictures else None

    def close(self) -> None:
        self._context = None


def _first_slice(data: bytes) -> int:
    """Offset of the first NAL unit that is not a parameter set, SEI or delimiter."""
    start = data.find(b"\0\0\1")
    while start >= 0 and start + 3 < len(data):
        if data[start + 3] & 0x1F in (1, 5):
            return start - 1 if start > 0 and data[start - 1] == 0 else start
        start = data.find(b"\0\0\1", start + 3)
    return len(data)
