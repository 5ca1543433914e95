"""Wire format v1: typed messages and their ZeroMQ multipart form.

A message is `[topic, header, payload?]`: an ASCII topic, a msgpack map header carrying
`v: 1`, and for frames the raw payload, sent zero-copy. `encode(msg)` gives the parts to send,
`decode(parts)` the typed message back — or a `ProtocolError` naming what is wrong, which
receivers count and survive. Unknown header keys are ignored so newer senders stay readable.

Times are integer nanoseconds. `t_capture_ns` and `t_publish_ns` come from the publisher's
wall clock; `t_receive_ns` is stamped by the receiver on its own monotonic clock. A frame's age
is therefore `(now - t_receive_ns) + (t_publish_ns - t_capture_ns)`: two differences, each on
one clock, never one host's clock compared with another's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgpack
import numpy as np

from . import topics
from .errors import LimitError, ProtocolError, VersionError
from .jpeg import EOI, SOI, decode_jpeg

VERSION = 1
MAX_PAYLOAD = 64 * 1024 * 1024
MAX_DIMENSION = 16384
MAX_HEADER = 1024 * 1024
CHANNELS = {"bgr8": 3, "gray8": 1}


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image of one camera, as it travels the fabric.

    `data` is the payload (JPEG bytes, or `h*step` raw bytes); `.image` is the numpy array,
    decoded from JPEG on first use, read-only (it is shared by every reader of this frame).
    `t_receive_ns` is the receiver's monotonic clock at arrival (0 on the publishing side);
    `t_delay_ns` the time the receiver estimates the frame spent in flight beyond its link's
    usual (a queue, a partition; see `protocol.delay`), which its age includes.
    """

    cam: int
    seq: int
    t_capture_ns: int
    w: int
    h: int
    encoding: str
    data: bytes | memoryview
    node: str = ""
    frame_id: str = ""
    t_publish_ns: int = 0
    step: int = 0
    t_receive_ns: int = 0
    t_delay_ns: int = 0

    @cached_property
    def image(self) -> np.ndarray:
        """The frame as a read-only numpy array: (h, w, 3) BGR or (h, w) gray, uint8 (copy it
        with `.copy()` to draw on it)."""
        if self.encoding == "jpeg":
            pixels = decode_jpeg(self.data)
        else:
            channels = CHANNELS[self.encoding]
            rows = np.frombuffer(self.data, dtype=np.uint8).reshape(self.h, self.step)
            pixels = rows[:, : self.w * channels]
            pixels = pixels.reshape(self.h, self.w, channels) if channels > 1 else pixels
        pixels.flags.writeable = False
        return pixels

    def age_ns(self, now_ns: int | None = None) -> int:
        """Nanoseconds since capture: receiver-side wait, publisher-side wait and time in flight
        beyond the link's usual, each measured on one clock."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (max(0, now - self.t_receive_ns) + max(0, self.t_publish_ns - self.t_capture_ns)
                + self.t_delay_ns)

    @property
    def topic(self) -> bytes:
        return topics.frame(self.cam, self.encoding)


@dataclass(frozen=True)
class Meta:
    """A camera's heartbeat: its registry entry and health, sent by its node every second."""

    cam: int
    node: str
    registry: dict[str, Any]
    health: dict[str, Any]
    t_publish_ns: int = 0
    t_receive_ns: int = 0

    @property
    def topic(self) -> bytes:
        return topics.meta(self.cam)


@dataclass(frozen=True)
class Scan:
    """A node's startup scan report."""

    node: str
    report: dict[str, Any]
    t_publish_ns: int = 0
    t_receive_ns: int = 0

    @property
    def topic(self) -> bytes:
        return topics.scan(self.node)


@dataclass(frozen=True)
class Status:
    """A subscriber service's own state (e.g. the uploader's per-camera upload state)."""

    service: str
    state: dict[str, Any]
    t_publish_ns: int = 0
    t_receive_ns: int = 0

    @property
    def topic(self) -> bytes:
        return topics.status(self.service)


@dataclass(frozen=True)
class World:
    """The tracker's world model."""

    model: dict[str, Any]
    source: str = ""
    t_publish_ns: int = 0
    t_receive_ns: int = 0

    @property
    def topic(self) -> bytes:
        return topics.world()


Message = Frame | Meta | Scan | Status | World


@dataclass
class DecodeStats:
    """Counts a receiver keeps of what it got; `malformed` counts messages dropped as bad."""

    received: int = 0
    malformed: int = 0
    last_error: str = ""
    by_reason: dict[str, int] = field(default_factory=dict)

    def count_malformed(self, exc: ProtocolError) -> None:
        self.malformed += 1
        self.last_error = str(exc)
        reason = type(exc).__name__
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


def _pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": VERSION, **header}, use_bin_type=True)


def encode(msg: Message, t_publish_ns: int | None = None) -> list[Any]:
    """The multipart parts for `msg`, stamping `t_publish_ns` (wall clock) when not given."""
    t_pub = time.time_ns() if t_publish_ns is None else t_publish_ns
    if isinstance(msg, Frame):
        check_frame(msg)
        header = {
            "cam": msg.cam, "seq": msg.seq, "t_capture_ns": msg.t_capture_ns,
            "t_publish_ns": t_pub, "node": msg.node, "w": msg.w, "h": msg.h,
            "encoding": msg.encoding, "frame_id": msg.frame_id,
        }
        if msg.encoding in CHANNELS:
            header["step"] = msg.step
        return [msg.topic, _pack(header), msg.data]
    if isinstance(msg, Meta):
        header = {"cam": msg.cam, "node": msg.node, "registry": msg.registry,
                  "health": msg.health, "t_publish_ns": t_pub}
    elif isinstance(msg, Scan):
        header = {"node": msg.node, "report": msg.report, "t_publish_ns": t_pub}
    elif isinstance(msg, Status):
        header = {"service": msg.service, "state": msg.state, "t_publish_ns": t_pub}
    elif isinstance(msg, World):
        header = {"model": msg.model, "source": msg.source, "t_publish_ns": t_pub}
    else:
        raise TypeError(f"not a wire message: {type(msg).__name__}")
    return [msg.topic, _pack(header)]


def check_frame(frame: Frame) -> None:
    """Raise a ProtocolError when `frame` breaks the format's limits."""
    if frame.encoding not in topics.ENCODINGS:
        raise ProtocolError(f"unknown encoding {frame.encoding!r}")
    if not (0 < frame.w <= MAX_DIMENSION and 0 < frame.h <= MAX_DIMENSION):
        raise LimitError(f"size {frame.w}x{frame.h} outside 1..{MAX_DIMENSION}")
    size = len(frame.data)
    if size > MAX_PAYLOAD:
        raise LimitError(f"payload of {size} bytes exceeds {MAX_PAYLOAD}")
    if frame.encoding == "jpeg":
        view = memoryview(frame.data)
        if size < 4 or bytes(view[:2]) != SOI or bytes(view[size - 2 :]) != EOI:
            raise ProtocolError("jpeg payload does not start with FFD8 and end with FFD9")
        return
    min_step = frame.w * CHANNELS[frame.encoding]
    if frame.step < min_step:
        raise LimitError(f"step {frame.step} < width*channels {min_step}")
    if size != frame.h * frame.step:
        raise LimitError(f"raw payload of {size} bytes != h*step = {frame.h * frame.step}")


def _get(header: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(key)
    if value is None:
        raise ProtocolError(f"header lacks {key!r}")
    # bool is an int to Python but never a valid count, size or time here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"header {key!r} is {type(value).__name__}, not {kind}")
    return value


def _nonneg(header: dict[str, Any], key: str) -> int:
    value = _get(header, key, int)
    if value < 0:
        raise ProtocolError(f"header {key!r} is negative")
    return value


def _as_bytes(part: Any) -> bytes:
    if isinstance(part, bytes):
        return part
    buffer = getattr(part, "bytes", None)  # a zmq.Frame
    return buffer if isinstance(buffer, bytes) else bytes(part)


def _as_buffer(part: Any) -> bytes | memoryview:
    if isinstance(part, bytes | memoryview):
        return part
    buffer = getattr(part, "buffer", None)  # a zmq.Frame: keep it zero-copy
    return buffer if buffer is not None else bytes(part)


def decode(parts: Sequence[Any], t_receive_ns: int | None = None) -> Message:
    """The typed message in `parts`, or a ProtocolError naming what breaks the format."""
    if len(parts) not in (2, 3):
        raise ProtocolError(f"expected 2 or 3 parts, got {len(parts)}")
    try:
        topic = _as_bytes(parts[0]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("topic is not ASCII") from exc
    raw_header = _as_bytes(parts[1])
    if len(raw_header) > MAX_HEADER:
        raise LimitError(f"header of {len(raw_header)} bytes exceeds {MAX_HEADER}")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"header is not msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"header is a {type(header).__name__}, not a map")
    if "v" not in header:
        raise VersionError("header lacks 'v'")
    if header["v"] != VERSION or isinstance(header["v"], bool):
        raise VersionError(f"unsupported version {header['v']!r}; this receiver speaks v{VERSION}")
    rx = time.monotonic_ns() if t_receive_ns is None else t_receive_ns
    t_pub = _nonneg(header, "t_publish_ns")

    if topic.startswith(topics.FRAME):
        if len(parts) != 3:
            raise ProtocolError("frame message without payload")
        encoding = _get(header, "encoding", str)
        if encoding not in topics.ENCODINGS:
            raise ProtocolError(f"unknown encoding {encoding!r}")
        cam = _nonneg(header, "cam")
        if topic != topics.frame(cam, encoding).decode():
            raise ProtocolError(f"topic {topic!r} does not match cam {cam} / {encoding}")
        frame = Frame(
            cam=cam, seq=_nonneg(header, "seq"), t_capture_ns=_nonneg(header, "t_capture_ns"),
            t_publish_ns=t_pub, node=_get(header, "node", str), w=_nonneg(header, "w"),
            h=_nonneg(header, "h"), encoding=encoding,
            frame_id=str(header.get("frame_id", "")),
            step=_nonneg(header, "step") if encoding in CHANNELS else 0,
            data=_as_buffer(parts[2]), t_receive_ns=rx,
        )
        check_frame(frame)
        return frame

    if len(parts) == 3 and len(_as_bytes(parts[2])) != 0:
        raise ProtocolError(f"{topic!r} carries a payload; only frames do")
    if topic.startswith(topics.META):
        cam = _nonneg(header, "cam")
        if topic != topics.meta(cam).decode():
            raise ProtocolError(f"topic {topic!r} does not match cam {cam}")
        return Meta(cam=cam, node=_get(header, "node", str),
                    registry=_get(header, "registry", dict), health=_get(header, "health", dict),
                    t_publish_ns=t_pub, t_receive_ns=rx)
    if topic.startswith(topics.SCAN):
        return Scan(node=_get(header, "node", str), report=_get(header, "report", dict),
                    t_publish_ns=t_pub, t_receive_ns=rx)
    if topic.startswith(topics.STATUS):
        return Status(service=_get(header, "service", str), state=_get(header, "state", dict),
                      t_publish_ns=t_pub, t_receive_ns=rx)
    if topic == topics.WORLD:
        return World(model=_get(header, "model", dict), source=str(header.get("source", "")),
                     t_publish_ns=t_pub, t_receive_ns=rx)
    raise ProtocolError(f"unknown topic {topic!r}")
