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

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgpack
import numpy as np

from . import topics, world
from .errors import LimitError, ProtocolError, VersionError
from .jpeg import EOI, MAX_DIMENSION, MAX_PIXELS, SOI, decode_jpeg, jpeg_size

VERSION = 1
MAX_PAYLOAD = 64 * 1024 * 1024
MAX_HEADER = 1024 * 1024
# A header is a map of scalars, with a registry, health or world model a few levels deep.
MAX_DEPTH = 16
MAX_ITEMS = 65536
MAX_STRING = 64 * 1024
MAX_FRAME_ID = 256
MAX_TOPIC = 256
MAX_FPS = 1000  # the fastest a camera may capture; bounds the frames a sequence gap can hold
CHANNELS = {"bgr8": 3, "gray8": 1}
ANNEX_B_START = b"\0\0\1"


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image of one camera, as it travels the fabric.

    `data` is the payload (JPEG bytes, `h*step` raw bytes, or one H.264 access unit in Annex B
    form); `.image` is the numpy array, decoded from JPEG on first use, read-only (it is shared
    by every reader of this frame). An H.264 frame has no `.image` of its own: it depends on
    the frames before it, so a receiver feeds the stream to a decoder (PyAV), starting at a
    frame whose `key` is true (it carries SPS and PPS).
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
    key: bool = False

    @cached_property
    def image(self) -> np.ndarray:
        """The frame as a read-only numpy array: (h, w, 3) BGR or (h, w) gray, uint8 (copy it
        with `.copy()` to draw on it)."""
        if self.encoding == "jpeg":
            pixels = decode_jpeg(self.data)
        elif self.encoding in topics.VIDEO_ENCODINGS:
            raise _error("video", f"an {self.encoding} frame is one access unit of a stream; "
                                  "decode the stream in order with a video decoder (e.g. PyAV)")
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
    """The tracker's world model, as it stood at its moment (`model["updated"]`).

    `at(t_ns)` is the model estimated for a moment of the receiver's monotonic clock (the clock
    of `t_receive_ns`), `objects()` the objects, each with `.at(t_ns)`: see `protocol.world`."""

    model: dict[str, Any]
    source: str = ""
    t_publish_ns: int = 0
    t_receive_ns: int = 0

    @property
    def topic(self) -> bytes:
        return topics.world()

    def at(self, t_ns: int | None = None) -> dict[str, Any]:
        """The model with every object's position, uncertainty and `stale` estimated for
        `t_ns` (default: now, `time.monotonic_ns()`)."""
        now = time.monotonic_ns() if t_ns is None else t_ns
        moment = world.model_moment_ns(self.model, self.t_publish_ns, self.t_receive_ns)
        return world.model_at(self.model, max(0, now - moment) / 1e9)

    def objects(self) -> list[world.WorldObject]:
        """The model's objects; `obj.at(t_ns)` estimates one at a moment of the receiver's clock."""
        moment = world.model_moment_ns(self.model, self.t_publish_ns, self.t_receive_ns)
        stale_s = world.number(self.model.get("stale_s"))
        bound = world.number(self.model.get("max_uncertainty_mm"))
        objects = self.model.get("objects")
        return [world.WorldObject(o, moment, stale_s, bound)
                for o in (objects if isinstance(objects, list) else []) if isinstance(o, dict)]


Message = Frame | Meta | Scan | Status | World


def _error(kind: str, message: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
    """A ProtocolError carrying `kind`: a short fixed name of what broke, never a value."""
    exc = cls(message)
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


def failure_kind(exc: BaseException) -> str:
    """The fixed kind of a decode failure (e.g. "header.depth"), for counting and log-once."""
    kind = getattr(exc, "kind", "")
    return kind if isinstance(kind, str) and kind else type(exc).__name__


@dataclass
class DecodeStats:
    """Counts a receiver keeps of what it got; `malformed` counts messages dropped as bad,
    `by_reason` per failure kind (a bounded set: the kinds are fixed names, never values)."""

    received: int = 0
    malformed: int = 0
    last_error: str = ""
    by_reason: dict[str, int] = field(default_factory=dict)

    def count_malformed(self, exc: BaseException) -> None:
        self.malformed += 1
        self.last_error = str(exc)[:200]
        reason = failure_kind(exc)
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
        elif msg.encoding in topics.VIDEO_ENCODINGS:
            header["key"] = bool(msg.key)
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
        raise _error("encoding", f"unknown encoding {frame.encoding!r}")
    if not (0 < frame.w <= MAX_DIMENSION and 0 < frame.h <= MAX_DIMENSION):
        raise _error("size", f"size {frame.w}x{frame.h} outside 1..{MAX_DIMENSION}", LimitError)
    if frame.w * frame.h > MAX_PIXELS:
        raise _error("pixels", f"size {frame.w}x{frame.h} is over the cap of {MAX_PIXELS} pixels",
                     LimitError)
    size = len(frame.data)
    if size > MAX_PAYLOAD:
        raise _error("payload", f"payload of {size} bytes exceeds {MAX_PAYLOAD}", LimitError)
    if frame.encoding == "jpeg":
        view = memoryview(frame.data)
        if size < 4 or bytes(view[:2]) != SOI or bytes(view[size - 2 :]) != EOI:
            raise _error("jpeg", "jpeg payload does not start with FFD8 and end with FFD9")
        try:
            declared = jpeg_size(view)
        except ProtocolError as exc:
            raise _error("jpeg", str(exc)) from exc
        # What a decoder will allocate is the SOF's size, not the header's: they must agree.
        if declared != (frame.w, frame.h):
            raise _error("jpeg.sof", f"JPEG's own SOF says {declared[0]}x{declared[1]}, the "
                                     f"header {frame.w}x{frame.h}", LimitError)
        return
    if frame.encoding in topics.VIDEO_ENCODINGS:
        view = memoryview(frame.data)
        if bytes(view[:3]) != ANNEX_B_START and bytes(view[:4]) != b"\0" + ANNEX_B_START:
            raise _error("h264", "h264 payload does not start with an Annex B start code")
        return
    min_step = frame.w * CHANNELS[frame.encoding]
    if frame.step < min_step:
        raise _error("step", f"step {frame.step} < width*channels {min_step}", LimitError)
    if size != frame.h * frame.step:
        raise _error("raw.size", f"raw payload of {size} bytes != h*step = {frame.h * frame.step}",
                     LimitError)


def _get(header: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(key)
    if value is None:
        raise _error(f"field.{key}", f"header lacks {key!r}")
    # bool is an int to Python but never a valid count, size or time here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _error(f"field.{key}", f"header {key!r} is {type(value).__name__}, not {kind}")
    return value


def _nonneg(header: dict[str, Any], key: str) -> int:
    value = _get(header, key, int)
    if not 0 <= value < 2**63:
        raise _error(f"field.{key}", f"header {key!r} is outside 0..2**63-1")
    return value


_NUMBER = (int, float)
_TEXT = (str, type(None))
# The registry and health fields the gateway, dashboard and metrics read, with the types they
# rely on; a heartbeat with any other type for one of them is refused as a whole (and the
# camera's previous heartbeat stays in force). Unknown keys pass: forward compatibility.
REGISTRY_FIELDS: dict[str, tuple[type, ...] | str] = {
    "id": (int,), "device": _TEXT, "name": _TEXT, "role": _TEXT, "mount": _TEXT,
    "description": _TEXT, "fov_deg": (*_NUMBER, type(None)), "resolution": "size",
}
HEALTH_FIELDS: dict[str, tuple[type, ...] | str] = {
    "connected": (bool,), "state": _TEXT, "fps": _NUMBER, "configured_fps": _NUMBER,
    "frames": (int,), "errors": (int,), "retries": (int,), "last_error": _TEXT, "node": _TEXT,
    "width": (int,), "height": (int,), "source": _TEXT, "last_capture_ns": (int,),
    "seq": (int,), "cpu_s": _NUMBER, "run": _TEXT,
}


def check_fields(values: dict[str, Any], spec: dict[str, tuple[type, ...] | str], what: str) -> None:
    """Raise a ProtocolError (kind `what.key`) for a known field of the wrong type."""
    for key, kind in spec.items():
        if key not in values:
            continue
        value = values[key]
        if kind == "size":
            ok = (isinstance(value, list) and len(value) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIMENSION
                          for v in value))
            expected = f"[w, h] with each in 0..{MAX_DIMENSION}"
        else:
            ok = isinstance(value, kind) and (bool in kind or not isinstance(value, bool))
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in kind)
        if not ok:
            raise _error(f"{what}.{key}", f"{what}.{key} is {type(value).__name__}, expected {expected}")


def _check_tree(header: dict[str, Any]) -> None:
    """Bound the header's nesting and item count, and keep every nested map JSON-shaped.

    msgpack itself parses deep nesting fine, but Python code that later walks the value
    (`str`, `repr`, `json.dumps` of a registry) recurses, and ~1000 levels raise
    RecursionError far from here. Everything a header carries beyond the frame fields ends up
    in JSON (`/cameras`, `/status`, `/world`), so map keys must be strings and values plain
    JSON values: no binary, no extension types, no NaN or infinity.
    """
    stack: list[tuple[Any, int]] = [(header, 0)]
    items = 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise _error("header.items", f"header has more than {MAX_ITEMS} items", LimitError)
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise _error("header.depth", f"header nests deeper than {MAX_DEPTH}", LimitError)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _error("header.key", f"header map key is {type(key).__name__}, not str")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise _error("header.depth", f"header nests deeper than {MAX_DEPTH}", LimitError)
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _error("header.value", "header holds a NaN or infinite number (JSON has none)")
        elif not isinstance(value, str | int | float | bool | None):
            raise _error("header.value", f"header holds a {type(value).__name__} value; only "
                                         "JSON-like values may travel in a header")


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
        raise _error("parts", f"expected 2 or 3 parts, got {len(parts)}")
    raw_topic = _as_bytes(parts[0])
    if len(raw_topic) > MAX_TOPIC:
        raise _error("topic", f"topic of {len(raw_topic)} bytes is over {MAX_TOPIC}")
    try:
        topic = raw_topic.decode("ascii")
    except UnicodeDecodeError as exc:
        raise _error("topic", "topic is not ASCII") from exc
    raw_header = _as_bytes(parts[1])
    if len(raw_header) > MAX_HEADER:
        raise _error("header.size", f"header of {len(raw_header)} bytes exceeds {MAX_HEADER}",
                     LimitError)
    try:
        header = msgpack.unpackb(
            raw_header, raw=False, strict_map_key=False, max_str_len=MAX_STRING,
            max_bin_len=MAX_STRING, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS, max_ext_len=0)
    except Exception as exc:  # msgpack raises ValueError, TypeError, its own and more
        raise _error("header.msgpack", f"header is not msgpack ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise _error("header.type", f"header is a {type(header).__name__}, not a map")
    _check_tree(header)
    if "v" not in header:
        raise _error("version", "header lacks 'v'", VersionError)
    if header["v"] != VERSION or isinstance(header["v"], bool):
        shown = header["v"] if isinstance(header["v"], int | float | bool) else type(header["v"]).__name__
        raise _error("version", f"unsupported version {shown!r}; this receiver speaks v{VERSION}",
                     VersionError)
    rx = time.monotonic_ns() if t_receive_ns is None else t_receive_ns
    t_pub = _nonneg(header, "t_publish_ns")

    if topic.startswith(topics.FRAME):
        if len(parts) != 3:
            raise _error("payload", "frame message without payload")
        encoding = _get(header, "encoding", str)
        if encoding not in topics.ENCODINGS:
            raise _error("encoding", f"unknown encoding {encoding[:16]!r}")
        cam = _nonneg(header, "cam")
        if topic != topics.frame(cam, encoding).decode():
            raise _error("topic.cam", f"topic {topic!r} does not match cam {cam} / {encoding}")
        frame_id = header.get("frame_id", "")
        if not isinstance(frame_id, str) or len(frame_id) > MAX_FRAME_ID:
            raise _error("field.frame_id", f"header 'frame_id' is not a string of at most "
                                           f"{MAX_FRAME_ID} characters")
        frame = Frame(
            cam=cam, seq=_nonneg(header, "seq"), t_capture_ns=_nonneg(header, "t_capture_ns"),
            t_publish_ns=t_pub, node=_get(header, "node", str), w=_nonneg(header, "w"),
            h=_nonneg(header, "h"), encoding=encoding,
            frame_id=frame_id,
            step=_nonneg(header, "step") if encoding in CHANNELS else 0,
            data=_as_buffer(parts[2]), t_receive_ns=rx,
            key=_get(header, "key", bool) if encoding in topics.VIDEO_ENCODINGS else False,
        )
        check_frame(frame)
        return frame

    if len(parts) == 3 and len(parts[2]) != 0:
        raise _error("payload", f"{topic!r} carries a payload; only frames do")
    if topic.startswith(topics.META):
        cam = _nonneg(header, "cam")
        if topic != topics.meta(cam).decode():
            raise _error("topic.cam", f"topic {topic!r} does not match cam {cam}")
        registry, health = _get(header, "registry", dict), _get(header, "health", dict)
        check_fields(registry, REGISTRY_FIELDS, "registry")
        check_fields(health, HEALTH_FIELDS, "health")
        return Meta(cam=cam, node=_get(header, "node", str), registry=registry, health=health,
                    t_publish_ns=t_pub, t_receive_ns=rx)
    if topic.startswith(topics.SCAN):
        return Scan(node=_get(header, "node", str), report=_get(header, "report", dict),
                    t_publish_ns=t_pub, t_receive_ns=rx)
    if topic.startswith(topics.STATUS):
        return Status(service=_get(header, "service", str), state=_get(header, "state", dict),
                      t_publish_ns=t_pub, t_receive_ns=rx)
    if topic == topics.WORLD:
        source = header.get("source", "")
        return World(model=_get(header, "model", dict), source=source if isinstance(source, str) else "",
                     t_publish_ns=t_pub, t_receive_ns=rx)
    raise _error("topic", f"unknown topic {topic!r}")
