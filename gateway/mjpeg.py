"""MJPEG over HTTP: `multipart/x-mixed-replace; boundary=frame`, newest frame only, per-client
flow control.

The boundary opens the stream and closes every part, as mjpg-streamer lays it out: a browser
shows a part as soon as its closing boundary arrives, so each frame is complete the moment
its own write lands, not one frame later. A client that parses by `Content-Length` (Mainsail)
and one that scans for FFD8…FFD9 (MobileRaker) both see whole JPEGs:

    --frame\r\n                              (sent at once, with the response headers)
    Content-Type: image/jpeg\r\n
    Content-Length: 51234\r\n
    X-Timestamp: 1700000000.123456\r\n
    \r\n
    <JPEG bytes>\r\n
    --frame\r\n

Flow control. Once the response headers have left, a stream's connection is handed to the
process's one `MjpegFanout` thread (fanout.py), which writes parts straight to the socket (a
duplicate of Waitress's descriptor, non-blocking, with a small `SO_SNDBUF`): a part is written
only when the previous one has left the server entirely and the reader's TCP window shows it
has read it, and it is always the newest frame. A reader of any speed therefore sees each part
at most about one frame interval plus its own reading time old; the frames that came while its
previous part was still on its way are skipped and counted (`StreamStats`). The fan-out also
makes a part cheap: one `sendmsg` per client straight from shared buffers built once per
frame, with no copy of the JPEG, no hand-off between threads per part and no buffering in
Waitress. The request's own thread only waits for the stream to end (client gone, gateway
stopping).

The connection is taken from Waitress and given back through waitress_seam.py. Where the
server is not Waitress (Falcon's in-process test client), the stream falls back to an
iterator of parts written by the server. `StreamSlots` caps concurrent streams — across
worker processes when given a shared counter.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from ..protocol import wire
from ..protocol.errors import FrameTimeout
from .cache import FrameCache
from .fanout import MjpegFanout, StreamClient, StreamStats
from .waitress_seam import RequestConnection

__all__ = ["BOUNDARY", "CONTENT_TYPE", "FanoutRegistry", "MjpegStream", "StreamSlots", "StreamStats",
           "part", "shared_counts"]

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
DELIMITER = f"--{BOUNDARY}\r\n".encode("ascii")
TAIL = b"\r\n" + DELIMITER
# Every part starts with these bytes, whatever its frame (`_probe`).
CONTENT_TYPE_LINE = b"Content-Type: image/jpeg\r\n"
PART_PREFIX = CONTENT_TYPE_LINE + b"Content-Length: "
# How often a stream served by its own iterator looks up from its wait to notice shutdown or
# a gone client.
WAKE_INTERVAL_S = 0.25
# A request thread whose stream the fan-out serves sleeps this long between checks of its own:
# hundreds of threads waking often would contend for the GIL with the fan-out.
HANDED_OVER_CHECK_S = 5.0
# What of a part may wait in the kernel, unsent, after the server has handed it over: bytes
# the client is not taking yet (`TCP_NOTSENT_LOWAT`, Linux and macOS), and the send buffer
# as a whole (`SO_SNDBUF`; Linux doubles it for its bookkeeping), which also holds what is in
# flight and not yet acknowledged on a LAN. Small, so a slow reader's parts stay fresh; the
# unsent bound keeps a part that a fast reader takes at once to a single write.
STREAM_NOTSENT_BYTES = 32 * 1024
STREAM_SNDBUF_BYTES = 128 * 1024
# Time allowed for the response headers to leave Waitress before the stream is handed over.
HANDOFF_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


def part(frame: wire.Frame) -> bytes:
    """One multipart part carrying `frame`'s JPEG, with its capture time in X-Timestamp,
    closed by the boundary."""
    return b"".join(_part_buffers(frame, chunked=False))


def _part_buffers(frame: wire.Frame, chunked: bool,
                  probed: int = 0) -> tuple[bytes, bytes | memoryview, bytes]:
    """`part(frame)` as three buffers for one `sendmsg`, the JPEG not copied; with `chunked`,
    framed as one HTTP/1.1 chunk. `probed`: how many bytes of `PART_PREFIX` already went out
    ahead of the part (`_probe`), left out here."""
    data = frame.data
    head = (b"%sContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n"
            % (CONTENT_TYPE_LINE, len(data), frame.t_capture_ns / 1e9))[probed:]
    if not chunked:
        return head, data, TAIL
    size = b"%X\r\n" % (len(head) + len(data) + len(TAIL))
    return size + head, data, TAIL + b"\r\n"


def _probe(chunked: bool, index: int) -> bytes | None:
    """Byte `index` of `PART_PREFIX`, framed for the stream (its own chunk when `chunked`), or
    None when every byte of it has gone. The fan-out sends these ahead of a part, one at a time,
    when it needs a slow reader's TCP acknowledgement to see how much it has read (fanout.py)."""
    byte = PART_PREFIX[index:index + 1]
    if not byte:
        return None
    return b"1\r\n" + byte + b"\r\n" if chunked else byte


class StreamSlots:
    """A cap on concurrent MJPEG streams, over every worker process of a gateway.

    `counts` holds one cell per worker (a shared array from `shared_counts`, or this process's
    own), and worker `worker` writes only its own cell: a worker that dies — even by SIGKILL,
    holding whatever it held — leaves no lock taken and no count that nobody can correct, and
    its parent zeroes its cell (`WorkerPool`), because its connections died with it. The total
    is read without a lock, so streams that start at the same instant in different workers may
    overshoot `limit` by at most one per other worker.
    """

    def __init__(self, limit: int, counts: Any | None = None, worker: int = 0) -> None:
        self.limit = limit
        self.counts = counts if counts is not None else shared_counts(1)
        self.worker = worker
        self._lock = threading.Lock()  # this process's threads, on its own cell

    def acquire(self) -> bool:
        """Take a slot; False when `limit` streams are already open."""
        with self._lock:
            if sum(self.counts) >= self.limit:
                return False
            self.counts[self.worker] += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.counts[self.worker] = max(0, self.counts[self.worker] - 1)

    @property
    def in_use(self) -> int:
        return int(sum(self.counts))


def shared_counts(workers: int) -> Any:
    """One stream count per worker, in memory the worker processes share (no lock: each cell
    has one writer)."""
    return multiprocessing.get_context("spawn").RawArray("i", workers)


class FanoutRegistry:
    """One `MjpegFanout` per FrameCache, made on the first stream that needs it."""

    _lock = threading.Lock()
    _fanouts: weakref.WeakKeyDictionary[FrameCache, MjpegFanout] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, cache: FrameCache) -> MjpegFanout:
        with cls._lock:
            fanout = cls._fanouts.get(cache)
            if fanout is None:
                fanout = cls._fanouts[cache] = MjpegFanout(cache, _part_buffers, _probe)
            return fanout


class MjpegStream:
    """The response body of one MJPEG client. Its first item is the opening boundary (which
    sends the response headers); then, under Waitress, the connection is handed to the
    fan-out and the iterator ends when the stream does (client gone, gateway stopping).

    Construction raises FrameTimeout (503) when the camera has no frame yet: a client gets an
    answer at once instead of a silent connection. It holds a stream slot from construction
    until `close()` (called by the WSGI server whether or not iteration ever started).
    """

    def __init__(
        self,
        cache: FrameCache,
        cam: int,
        slots: StreamSlots,
        stopping: threading.Event,
        connection: RequestConnection | None = None,
        stats: StreamStats | None = None,
        max_fps: float | None = None,
    ) -> None:
        self.cache = cache
        self.cam = cam
        self.slots = slots
        self.stopping = stopping
        self.connection = connection
        self.interval_s = 1.0 / max_fps if max_fps else 0.0  # `?fps=N`
        self._due_at = 0.0
        self.client_gone = connection.client_gone if connection is not None else (lambda: False)
        self.stats = stats if stats is not None else FanoutRegistry.of(cache).stats
        self.sent = 0
        self._last: wire.Frame | None = None
        self._closed = False
        self._started = False
        self._client: StreamClient | None = None
        self._fanout: MjpegFanout | None = None
        self._released = False
        self._counted = False  # counted open in `stats` by this iterator (not the fan-out)
        # The camera is wanted for as long as the stream is open, and no longer: the fan-out
        # only peeks at the cache, so the node stops encoding once the last client has gone
        # (after the cache's idle window).
        self._watch = contextlib.ExitStack()
        try:
            self._watch.enter_context(cache.watching(cam))
            if cache.latest(cam) is None:
                raise FrameTimeout(f"camera {cam} has not delivered a frame yet; retry shortly")
        except BaseException:
            self._closed = self._released = True
            self._watch.close()
            slots.release()
            raise

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if not self._started:
            # The opening boundary goes out at once, and with it the response headers.
            self._started = True
            return DELIMITER
        if self._client is None and not self._closed and not self._counted:
            self._hand_over()
        if self._client is not None:
            self._wait_handed_over()
        else:
            frame = self._next_frame()
            if frame is not None:
                self._last = frame
                self.sent += 1
                self.stats.add(self.cam, delivered=1)
                return part(frame)
        self.close()
        raise StopIteration

    def _alive(self) -> bool:
        return not (self._closed or self.stopping.is_set() or self.cache.closed or self.client_gone())

    def _hand_over(self) -> None:
        """Give the connection to the fan-out once Waitress has sent the headers."""
        connection = self.connection
        if connection is None:  # not Waitress: this iterator writes the parts
            self.stats.opened(self.cam)  # served by this iterator, counted here
            self._counted = True
            return
        if connection.headers_only:
            self._closed_without_client()
            return
        sock = connection.take(self._alive, HANDOFF_TIMEOUT_S)
        if sock is None:
            self._closed_without_client()
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, STREAM_NOTSENT_BYTES)
        except OSError as exc:
            log.debug("MJPEG stream of camera %d: connection gone at hand-over: %s", self.cam, exc)
            sock.close()
            connection.give_back()
            self._closed_without_client()
            return
        self._fanout = FanoutRegistry.of(self.cache)
        self._client = StreamClient(self.cam, sock, connection.chunked, self.stats,
                                    gone=lambda: not self._alive(), interval_s=self.interval_s)
        self._fanout.add(self._client)

    def _closed_without_client(self) -> None:
        self._client = None
        self._closed = True

    def _wait_handed_over(self) -> None:
        client = self._client
        assert client is not None and self._fanout is not None
        while not client.done.wait(HANDED_OVER_CHECK_S):
            if not self._alive():
                self._fanout.remove(client)
                client.done.wait(2.0)
                break
        self.connection.give_back()
        self.sent = client.delivered

    def _next_frame(self) -> wire.Frame | None:
        if self.interval_s:  # `?fps=N`: the newest frame once the interval has passed
            while self._alive() and (left := self._due_at - time.monotonic()) > 0:
                self.stopping.wait(min(left, WAKE_INTERVAL_S))
            self._due_at = time.monotonic() + self.interval_s
        while self._alive():
            frame = self.cache.wait_newer(self.cam, self._last, WAKE_INTERVAL_S)
            if frame is not None:
                return frame
        return None

    def __del__(self) -> None:
        # A body dropped unread (Falcon discards the stream of a HEAD answer without closing
        # it) must still give its stream slot back.
        if not getattr(self, "_released", True):
            self.close()

    def close(self) -> None:
        if self._client is not None and self._fanout is not None and not self._client.done.is_set():
            self._fanout.remove(self._client)
        if not self._released:
            self._released = True
            self.slots.release()
            self._watch.close()
        if self._counted:
            self._counted = False
            self.stats.closed(self.cam)
        if not self._closed:
            self._closed = True
            log.debug("MJPEG stream of camera %d closed after %d parts", self.cam, self.sent)
