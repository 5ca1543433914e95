"""Raw frames for `/frame/{id}?format=raw`: one decode per frame, shared, and few at once.

A raw frame is the camera's JPEG decoded to BGR bytes: at the pixel cap (2^25 pixels) that is
100 MB out of a JPEG of half a megabyte. Eight concurrent raw requests once decoded it eight
times and copied every result whole into its response, taking the gateway from 68 MB to
1.7 GB. Here

- requests for the same frame share one decode: the first decodes, the others wait for it; a
  request that may have any frame captured after it arrived joins one already decoded;
- at most `max_images` decoded frames exist at once; a request for another frame waits up to
  `wait_s` for one to be let go, and is then turned away (`RawBusy`: 503 + Retry-After);
- an answer is sent from the decoded array itself, a chunk at a time, never copied whole, and
  the decoded frame is let go when the last answer using it is closed.

So the memory raw answers take is bounded by `max_images` decoded frames, however many ask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..protocol import wire
from ..protocol.errors import FrameTimeout
from ..protocol.jpeg import decode_jpeg
from ..protocol.subscriber import captured_locally_ns

MAX_IMAGES = 2
WAIT_S = 1.0
CHUNK = 1 << 20  # bytes handed to the server at a time


class RawBusy(FrameTimeout):
    """A raw request turned away: as many frames as allowed are being decoded or sent."""


@dataclass
class _Decoded:
    """One frame's decode, shared by every request for that frame."""

    frame: wire.Frame
    users: int = 1
    done: threading.Event = field(default_factory=threading.Event)
    image: np.ndarray | None = None
    error: BaseException | None = None


def _key(frame: wire.Frame) -> tuple[str, int, int, int]:
    return (frame.node, frame.cam, frame.seq, frame.t_capture_ns)


class RawFrames:
    """Decodes frames for raw answers: shared per frame, at most `max_images` at once."""

    def __init__(self, max_images: int = MAX_IMAGES, wait_s: float = WAIT_S) -> None:
        self.max_images = max_images
        self.wait_s = wait_s
        self._decoded: dict[tuple[str, int, int, int], _Decoded] = {}
        self._changed = threading.Condition()
        self.decodes = 0  # how many times a JPEG was decoded here (shared decodes count once)

    def open(self, frame: wire.Frame, captured_after_ns: int | None = None) -> RawBody:
        """The decoded `frame` as an answer body; close it (the server does) to let it go.

        With `captured_after_ns` (this host's monotonic clock), a frame of the same camera and
        node already decoded, and captured after that moment, is shared instead of decoding
        `frame`. Raises RawBusy when no room for another decoded frame came within `wait_s`, and what
        decoding raises (a ProtocolError for a JPEG that does not decode)."""
        key = _key(frame)
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while True:
                entry = self._decoded.get(key) or self._any_after(frame, captured_after_ns)
                if entry is not None:  # being decoded, or sent, for another request
                    entry.users += 1
                    decode = False
                    break
                if len(self._decoded) < self.max_images:
                    entry = self._decoded[key] = _Decoded(frame)
                    self.decodes += 1
                    decode = True
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RawBusy(f"{self.max_images} raw frames are being decoded or sent "
                                  "already; retry shortly, or ask for format=jpeg")
                self._changed.wait(left)
        if decode:
            return self._decode(key, entry, frame)
        key = _key(entry.frame)
        entry.done.wait()
        if entry.error is not None:
            self._release(key, entry)
            raise entry.error
        return RawBody(self, key, entry)

    def _any_after(self, frame: wire.Frame, captured_after_ns: int | None) -> _Decoded | None:
        """The newest decoded frame of `frame`'s camera and node captured after the moment
        given, if any (lock held)."""
        if captured_after_ns is None:
            return None
        fits = [entry for entry in self._decoded.values()
                if entry.frame.cam == frame.cam and entry.frame.node == frame.node
                and entry.error is None
                and captured_locally_ns(entry.frame) > captured_after_ns]
        return max(fits, key=lambda entry: entry.frame.seq, default=None)

    def _decode(self, key: tuple[str, int, int, int], entry: _Decoded,
                frame: wire.Frame) -> RawBody:
        try:
            entry.image = np.ascontiguousarray(decode_jpeg(frame.data))
        except BaseException as exc:
            entry.error = exc
            entry.done.set()
            self._release(key, entry)
            raise
        entry.done.set()
        return RawBody(self, key, entry)

    def _release(self, key: tuple[str, int, int, int], entry: _Decoded) -> None:
        with self._changed:
            entry.users -= 1
            if entry.users == 0 and self._decoded.get(key) is entry:
                del self._decoded[key]
                self._changed.notify_all()

    @property
    def held(self) -> int:
        """Decoded frames alive now."""
        with self._changed:
            return len(self._decoded)


class RawBody:
    """An answer body sent from a shared decoded frame, a chunk at a time; closing it (once,
    or when it is collected) lets the frame go."""

    def __init__(self, owner: RawFrames, key: tuple[str, int, int, int], entry: _Decoded) -> None:
        self._owner = owner
        self._key = key
        self._entry = entry
        self._closed = False
        image = entry.image
        assert image is not None
        self.shape = image.shape
        self.dtype = image.dtype
        self.nbytes = image.nbytes

    def __iter__(self) -> Iterator[bytes]:
        image = self._entry.image
        if self._closed or image is None:
            return
        view = memoryview(image).cast("B")
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._release(self._key, self._entry)

    def __del__(self) -> None:  # an answer dropped without close() still lets the frame go
        self.close()


__all__ = ["RawBody", "RawBusy", "RawFrames"]
