"""Topic names of wire format v1.

Subscribing is prefix matching, so every per-camera topic closes its camera part with `/`:
`frame/1/` never matches `frame/10/`. A camera's topics are therefore

    frame/{cam}/jpeg   frame/{cam}/bgr8   frame/{cam}/gray8   frame/{cam}/h264   meta/{cam}/

and the others `scan/{node}/`, `status/{service}/` and `world`.
"""

from __future__ import annotations

from .errors import EncodingError

FRAME = "frame/"
META = "meta/"
SCAN = "scan/"
STATUS = "status/"
WORLD = "world"

ENCODINGS = ("jpeg", "bgr8", "gray8", "h264")
RAW_ENCODINGS = ("bgr8", "gray8")
# A video encoding's messages depend on the ones before them: a receiver decodes them in order
# and can start only at a keyframe (header `key`).
VIDEO_ENCODINGS = ("h264",)


def check_encoding(encoding: object) -> str:
    """`encoding` if the wire format knows it, else EncodingError naming the ones it knows."""
    if encoding not in ENCODINGS:
        raise EncodingError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    return encoding  # type: ignore[return-value]


def frame(cam: int, encoding: str) -> bytes:
    """Topic of one camera's frames in one encoding, e.g. b'frame/0/jpeg'."""
    check_encoding(encoding)
    return f"{FRAME}{int(cam)}/{encoding}".encode("ascii")


def frame_prefix(cam: int) -> bytes:
    """Prefix matching every encoding of one camera's frames."""
    return f"{FRAME}{int(cam)}/".encode("ascii")


def meta(cam: int) -> bytes:
    """Topic of one camera's heartbeat and registry entry."""
    return f"{META}{int(cam)}/".encode("ascii")


def scan(node: str) -> bytes:
    """Topic of one node's startup scan report."""
    return f"{SCAN}{node}/".encode("ascii")


def status(service: str) -> bytes:
    """Topic of one subscriber service's state (e.g. the Prusa Connect uploader)."""
    return f"{STATUS}{service}/".encode("ascii")


def world() -> bytes:
    """Topic of the tracker's world model."""
    return WORLD.encode("ascii")


def matches(prefix: bytes, topic: bytes) -> bool:
    """True when a subscription to `prefix` delivers `topic` (ZeroMQ prefix semantics)."""
    return topic.startswith(prefix)
