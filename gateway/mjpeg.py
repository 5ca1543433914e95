"""MJPEG over HTTP: `multipart/x-mixed-replace; boundary=frame`, newest frame only.

The boundary opens the stream and closes every part, as mjpg-streamer lays it out: a browser
shows a part as soon as its closing boundary arrives, so each frame is complete the moment
its own write lands, not one frame later. Each part is one write — headers, JPEG, boundary —
so a client that parses by `Content-Length` (Mainsail) and one that scans for FFD8…FFD9
(MobileRaker) both see whole JPEGs:

    --frame\r\n                              (sent at once, with the response headers)
    Content-Type: image/jpeg\r\n
    Content-Length: 51234\r\n
    X-Timestamp: 1700000000.123456\r\n
    \r\n
    <JPEG bytes>\r\n
    --frame\r\n

A stream holds one request thread for its lifetime and writes the newest frame each time it
may write: a slow client blocks only its own thread (Waitress's small output high-water
mark), and when it is ready again it gets the newest frame, never a backlog. `StreamSlots`
caps concurrent streams — across worker processes when given a shared counter — so streams
can never take every thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..protocol import wire
from .cache import FrameCache

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
DELIMITER = f"--{BOUNDARY}\r\n".encode("ascii")
# How often a waiting stream looks up from its frame wait to notice shutdown or a gone client.
WAKE_INTERVAL_S = 0.25

log = logging.getLogger(__name__)


def part(frame: wire.Frame) -> bytes:
    """One multipart part carrying `frame`'s JPEG, with its capture time in X-Timestamp,
    closed by the boundary."""
    data = frame.data
    header = (
        "Content-Type: image/jpeg\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"X-Timestamp: {frame.t_capture_ns / 1e9:.6f}\r\n"
        "\r\n"
    ).encode("ascii")
    return b"".join((header, data, b"\r\n", DELIMITER))


class StreamSlots:
    """A cap on concurrent MJPEG streams; `counter` is a multiprocessing Value shared by workers."""

    def __init__(self, limit: int, counter: Any | None = None) -> None:
        self.limit = limit
        self.counter = counter if counter is not None else multiprocessing.get_context(
            "spawn").Value("i", 0)

    def acquire(self) -> bool:
        """Take a slot; False when `limit` streams are already open."""
        with self.counter.get_lock():
            if self.counter.value >= self.limit:
                return False
            self.counter.value += 1
            return True

    def release(self) -> None:
        with self.counter.get_lock():
            self.counter.value = max(0, self.counter.value - 1)

    @property
    def in_use(self) -> int:
        return int(self.counter.value)


class MjpegStream:
    """The response body of one MJPEG client: an iterator of parts that ends on `close()`,
    on gateway shutdown, or when the server reports the client gone.

    It holds a stream slot from construction until `close()` (called by the WSGI server
    whether or not iteration ever started).
    """

    def __init__(
        self,
        cache: FrameCache,
        cam: int,
        slots: StreamSlots,
        stopping: threading.Event,
        client_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.cache = cache
        self.cam = cam
        self.slots = slots
        self.stopping = stopping
        self.client_gone = client_gone or (lambda: False)
        self.sent = 0
        self._last: wire.Frame | None = None
        self._closed = False
        self._started = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if not self._started:
            # The opening boundary goes out at once, and with it the response headers, so a
            # client knows it is connected even while the camera has no frame yet.
            self._started = True
            return DELIMITER
        while not self._closed:
            if self.stopping.is_set() or self.cache.closed or self.client_gone():
                break
            frame = self.cache.wait_newer(self.cam, self._last, WAKE_INTERVAL_S)
            if frame is not None:
                self._last = frame
                self.sent += 1
                return part(frame)
        self.close()
        raise StopIteration

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.slots.release()
            log.debug("MJPEG stream of camera %d closed after %d parts", self.cam, self.sent)
