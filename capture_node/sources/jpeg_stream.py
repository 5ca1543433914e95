"""Whole JPEGs out of a byte stream, and the newest of them handed to the capture thread.

`JpegSplitter` cuts a stream of back-to-back JPEGs (`rpicam-vid --codec mjpeg` over TCP, the
body of an MJPEG HTTP stream) into complete frames. It does not merely pair SOI (FFD8) with
EOI (FFD9): it walks the JPEG's marker segments by their lengths, then the entropy-coded data,
where FF is only ever followed by 00 (stuffing), D0–D7 (restart) or FF (fill). That is what
lets it tell a truncated frame from a whole one:

- bytes between frames that are not a JPEG (garbage, multipart headers) are skipped;
- a chunk may end anywhere — inside a marker, a length, a segment;
- a frame cut short and followed by the next frame's SOI is dropped, the next one kept;
- a frame is delivered only if it has a SOF and a SOS before its EOI.

What it cannot see without decoding is a frame cut inside its entropy-coded data and followed
not by another JPEG but by junk that happens to contain FFD9; a camera's TCP stream never does
that, and each connection gets a fresh splitter, so a sender that dies mid-frame costs only
that frame.

`FrameSlot` holds the newest frame a background reader produced: the capture thread takes the
newest one, never a queue of stale ones.
"""

from __future__ import annotations

import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

from ...protocol.errors import ProtocolError
from ...protocol.jpeg import jpeg_size
from ...protocol.wire import MAX_PAYLOAD
from ..errors import SourceError

log = logging.getLogger(__name__)

SOI = b"\xff\xd8"
# In entropy-coded data, FF followed by anything but 00, D0-D7 or FF is a real marker.
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_EXIF = b"Exif\x00\x00"


class JpegSplitter:
    """Incremental JPEG framer: `feed(chunk)` returns the frames that chunk completed.

    A frame larger than `max_frame_bytes` is dropped (and the stream resynchronised), so a
    stream that never ends a frame cannot grow memory without bound.
    """

    def __init__(self, max_frame_bytes: int = MAX_PAYLOAD) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._pos = 0          # next byte to look at
        self._in_scan = False  # inside entropy-coded data
        self._seen_sof = False
        self._seen_sos = False
        self.frames = 0        # complete frames delivered
        self.dropped = 0       # frames begun but not delivered (truncated, malformed, oversized)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add `data` and return every frame it completed, oldest first."""
        self.push(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Add `data` without parsing it yet (see `next_frame`)."""
        self._buf += data

    def next_frame(self) -> bytes | None:
        """Parse buffered bytes up to the end of the next complete frame; None if none yet."""
        while True:
            if not self._in_frame and not self._seek():
                return None
            status = self._walk()
            if status is None:
                if len(self._buf) > self.max_frame_bytes:
                    self._resync(f"frame larger than {self.max_frame_bytes} bytes")
                    continue
                return None
            if isinstance(status, bytes):
                return status

    def rest(self) -> bytes:
        """The buffered bytes after the last frame (when not inside one), and forget them.

        For a caller that reads frames out of a framed container (an MJPEG part without
        Content-Length) and must parse what follows the frame itself.
        """
        if self._in_frame:
            return b""
        rest = bytes(self._buf)
        self._buf.clear()
        self._pos = 0
        return rest

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf)

    # -- parsing -------------------------------------------------------------------------------
    def _seek(self) -> bool:
        start = self._buf.find(SOI, self._pos)
        if start < 0:
            # Keep a trailing FF: it may be the first half of the next SOI.
            keep = 1 if self._buf.endswith(b"\xff") else 0
            del self._buf[: len(self._buf) - keep]
            self._pos = 0
            return False
        del self._buf[:start]
        self._in_frame, self._pos, self._in_scan = True, 2, False
        self._seen_sof = self._seen_sos = False
        return True

    def _resync(self, why: str) -> None:
        """Drop the frame begun at buffer start; look for the next SOI after its own."""
        log.debug("dropping a JPEG of %d+ bytes: %s", self._pos, why)
        self.dropped += 1
        self._in_frame, self._in_scan, self._pos = False, False, 2

    def _walk(self) -> bytes | bool | None:
        """Advance through the current frame: a frame, True (state changed), None (need bytes)."""
        buf = self._buf
        while True:
            if self._in_scan:
                match = _SCAN_MARKER.search(buf, self._pos)
                if match is None:
                    self._pos = len(buf) - 1 if buf.endswith(b"\xff") else len(buf)
                    return None
                self._pos, self._in_scan = match.start(), False
            pos = self._pos
            if pos + 2 > len(buf):
                return None
            if buf[pos] != 0xFF:
                self._resync(f"byte {buf[pos]:#04x} where a marker belongs")
                return True
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                self._pos += 1
                continue
            if marker == 0xD8:  # the next frame began: this one was cut short
                self._resync("truncated (a new SOI inside it)")
                self._pos = pos
                return True
            if marker == 0xD9:
                if not (self._seen_sof and self._seen_sos):
                    self._resync("EOI before any image data")
                    return True
                frame = bytes(buf[: pos + 2])
                del buf[: pos + 2]
                self._in_frame, self._pos = False, 0
                self.frames += 1
                return frame
            if marker in _STANDALONE:
                self._pos += 2
                continue
            if marker == 0x00:
                self._resync("stuffed byte where a marker belongs")
                return True
            if pos + 4 > len(buf):
                return None
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            end = pos + 2 + length
            if length < 2:
                self._resync(f"segment length {length}")
                return True
            # A segment swallowing the next frame's start (SOI and the marker after it, which
            # may straddle the segment's end) means this frame was cut inside its headers.
            # Only an Exif block may legitimately hold a whole JPEG: its thumbnail. Checked on
            # what has arrived so far, so a cut length field does not stall the stream.
            seen_end = min(end + 1, len(buf))
            if buf.find(b"\xff\xd8\xff", pos + 2, seen_end) >= 0 and buf[pos + 4 : pos + 10] != _EXIF:
                self._resync("truncated (a new SOI inside a header segment)")
                return True
            if end + 1 > len(buf):
                return None
            if marker in _SOF:
                self._seen_sof = True
            elif marker == 0xDA:
                self._seen_sos = True
                self._in_scan = True
            self._pos = end


READ_SIZE = 256 * 1024


def read_chunks(read: Callable[[int], bytes], *, timeout_s: float, ended: str,
                describe: Callable[[BaseException], str] = str) -> Iterator[bytes]:
    """The bytes of a stream, chunk by chunk, from `read(n)` (a socket's recv, a response's
    read1) until it fails: silence for `timeout_s` (the reader's own timeout), an end of stream
    (`ended` says whose) and any OS or HTTP error all become a SourceError naming the cause."""
    while True:
        try:
            chunk = read(READ_SIZE)
        except TimeoutError as exc:
            raise SourceError(f"no data for {timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(describe(exc)) from exc
        if not chunk:
            raise SourceError(ended)
        yield chunk


def check_jpeg(data: bytes | bytearray | memoryview) -> bool:
    """True when `data` is exactly one well-formed JPEG (the splitter's rules, whole buffer)."""
    splitter = JpegSplitter(max_frame_bytes=max(len(data), 4))
    if bytes(data[:2]) != SOI:
        return False
    frames = splitter.feed(data)
    return len(frames) == 1 and len(frames[0]) == len(data)


def frame_size(jpeg: bytes) -> tuple[int, int]:
    """(w, h) from the JPEG's SOF, as a SourceError when it has none."""
    try:
        return jpeg_size(jpeg)
    except ProtocolError as exc:
        raise SourceError(f"JPEG of {len(jpeg)} bytes has no readable size: {exc}") from exc


class FrameSlot:
    """The newest frame from a background reader, or the reason the reader stopped.

    The reader `put`s every frame it completes (replacing any not yet taken) and `fail`s once
    when its connection ends; the capture thread `take`s the newest frame not yet taken.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._frame: tuple[bytes, int] | None = None
        self._error: str | None = None
        self._interrupted = False
        self._clock = clock
        self.replaced = 0  # frames overwritten before the capture thread took them

    def put(self, jpeg: bytes, t_capture_ns: int) -> None:
        with self._cond:
            if self._frame is not None:
                self.replaced += 1
            self._frame = (jpeg, t_capture_ns)
            self._cond.notify_all()

    def fail(self, error: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        """Whether the reader reported its stream ended."""
        return self._error is not None

    def interrupt(self) -> None:
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def take(self, timeout: float, what: str) -> tuple[bytes, int]:
        """The newest frame (jpeg, t_capture_ns); SourceError on failure, interrupt or timeout.

        A frame already complete is returned even after the reader failed: it is whole.
        """
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                if self._interrupted:
                    self._interrupted = False
                    raise SourceError(f"{what}: read interrupted")
                if self._frame is not None:
                    frame, self._frame = self._frame, None
                    return frame
                if self._error is not None:
                    raise SourceError(self._error)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise SourceError(f"{what}: no frame within {timeout:g} s")
                self._cond.wait(remaining)


class StreamReader:
    """A background thread that runs `frames()` and puts each JPEG into a `FrameSlot`.

    `frames` yields complete JPEGs and raises SourceError (or OSError) when the stream ends;
    `close_stream` is called from `stop()` to unblock it (closing its socket).
    """

    def __init__(self, name: str, frames: Callable[[], Iterator[bytes]],
                 close_stream: Callable[[], None], slot: FrameSlot) -> None:
        self.name = name
        self._frames = frames
        self._close_stream = close_stream
        self.slot = slot
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camfabric-{name}", daemon=True)

    def start(self) -> StreamReader:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._close_stream()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for jpeg in self._frames():
                self.slot.put(jpeg, time.time_ns())
                if self._stopping.is_set():
                    break
            self.slot.fail(f"{self.name}: stream ended")
        except (SourceError, OSError, ValueError) as exc:
            if self._stopping.is_set():
                self.slot.fail(f"{self.name}: closed")
            else:
                self.slot.fail(f"{self.name}: {exc}")
        except Exception as exc:  # a bug must still end the read with a reason, not hang it
            log.exception("%s: reader failed", self.name)
            self.slot.fail(f"{self.name}: reader failed: {exc!r}")
