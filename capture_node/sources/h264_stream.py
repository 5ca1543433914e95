"""Reading an H.264 byte stream (Annex B) as access units, for cameras that encode H.264.

`H264Splitter` cuts the stream at access-unit boundaries: a parameter set, SEI or delimiter
after a picture's slices, or a slice that starts a new picture (its first_mb_in_slice is 0).
An access unit is only known complete when the next one begins, so each leaves one unit late
(a frame interval: what `rpicam-vid --codec h264` without delimiters allows).

`UnitQueue` hands units from the reading thread to the capture loop in order — a video
stream cannot skip a unit the way a JPEG stream skips a frame — bounded: a loop that falls
`max_units` behind loses everything up to the next keyframe (counted in `dropped`), never a
growing queue.
"""

from __future__ import annotations

import collections
import threading
import time

from ...protocol.wire import MAX_PAYLOAD
from ..errors import SourceError

START = b"\0\0\1"
VCL = (1, 5)  # coded slices: non-IDR, IDR
STARTS_UNIT = (6, 7, 8, 9)  # SEI, SPS, PPS, access unit delimiter
IDR = 5


class H264Splitter:
    """Feed bytes, get whole access units `(bytes, key)` back, in order."""

    def __init__(self, max_unit_bytes: int = MAX_PAYLOAD) -> None:
        self.max_unit_bytes = max_unit_bytes
        self._buffer = bytearray()
        self._started = False  # a start code seen: the buffer begins with a NAL unit
        self._has_slice = False  # the unit being gathered holds a coded slice
        self._key = False
        self._scan = 0  # where to look for the next start code
        self.discarded = 0  # bytes thrown away (before the first start code, or an oversized unit)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[bytes, bool]]:
        self._buffer += data
        units: list[tuple[bytes, bool]] = []
        while True:
            nal = self._buffer.find(START, self._scan)
            if nal < 0 or nal + 4 >= len(self._buffer):
                break  # no next unit yet, or its header (and a slice's first byte) not here yet
            begin = nal - 1 if nal > 0 and self._buffer[nal - 1] == 0 else nal
            if not self._started:  # bytes before the first start code belong to nothing
                self.discarded += begin
                del self._buffer[:begin]
                nal -= begin
                begin = 0
                self._started = True
            kind = self._buffer[nal + 3] & 0x1F
            first_mb_zero = kind in VCL and bool(self._buffer[nal + 4] & 0x80)
            if self._has_slice and (kind in STARTS_UNIT or first_mb_zero):
                units.append((bytes(self._buffer[:begin]), self._key))
                del self._buffer[:begin]
                nal -= begin
                self._has_slice = self._key = False
            if kind in VCL:
                self._has_slice = True
                self._key = self._key or kind == IDR
            self._scan = nal + 3
        if len(self._buffer) > self.max_unit_bytes:  # no boundary in sight: not H.264, or broken
            self.discarded += len(self._buffer)
            self._buffer.clear()
            self._scan = 0
            self._started = self._has_slice = self._key = False
        return units


class UnitQueue:
    """Access units from a reader thread to the capture loop, in order, bounded."""

    def __init__(self, max_units: int = 30) -> None:
        self.max_units = max_units
        self.dropped = 0
        self._units: collections.deque[tuple[bytes, bool, int]] = collections.deque()
        self._cond = threading.Condition()
        self._skip_to_key = False
        self._error = ""
        self._interrupted = False

    def put(self, item: tuple[bytes, bool], t_capture_ns: int) -> None:
        """One access unit `(bytes, key)` as the reader completed it (a `StreamReader` slot)."""
        unit, key = item
        with self._cond:
            if self._skip_to_key and not key:
                self.dropped += 1
                return
            self._skip_to_key = False
            if len(self._units) >= self.max_units:
                self.dropped += len(self._units)
                self._units.clear()
                if not key:
                    self._skip_to_key = True
                    self.dropped += 1
                    return
            self._units.append((unit, key, t_capture_ns))
            self._cond.notify_all()

    def fail(self, error: str) -> None:
        with self._cond:
            self._error = self._error or error
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        """Whether the reader reported its stream ended."""
        return bool(self._error)

    def interrupt(self) -> None:
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def take(self, timeout: float, what: str) -> tuple[bytes, bool, int]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._units:
                if self._interrupted:
                    self._interrupted = False
                    raise SourceError(f"{what}: read interrupted")
                if self._error:
                    raise SourceError(self._error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"{what}: no H.264 access unit within {timeout:g} s")
                self._cond.wait(left)
            return self._units.popleft()
