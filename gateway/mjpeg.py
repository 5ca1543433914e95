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
process's one `MjpegFanout` thread, which writes parts straight to the socket (a duplicate of
Waitress's descriptor, non-blocking, with a small `SO_SNDBUF`): a part is written only when
the previous one has left the server entirely, and it is always the newest frame. A reader of
any speed therefore sees each part at most about one frame interval plus the kernel's socket
buffers old; the frames that came while its previous part was still on its way are skipped
and counted (`StreamStats`). The fan-out also makes a part cheap: one `sendmsg` per client
straight from shared buffers built once per frame, with no copy of the JPEG, no hand-off
between threads per part and no buffering in Waitress. The request's own thread only waits
for the stream to end (client gone, gateway stopping).

Where the server is not Waitress (Falcon's in-process test client), the stream falls back to
an iterator of parts written by the server. `StreamSlots` caps concurrent streams — across
worker processes when given a shared counter.
"""

from __future__ import annotations

import logging
import multiprocessing
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import wire
from ..protocol.errors import FrameTimeout, UnknownCamera
from .cache import FrameCache

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
DELIMITER = f"--{BOUNDARY}\r\n".encode("ascii")
TAIL = b"\r\n" + DELIMITER
# How often a waiting stream (or the fan-out, for all of its clients) looks up from its wait
# to notice shutdown or a gone client.
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


def _part_buffers(frame: wire.Frame, chunked: bool) -> tuple[bytes, bytes | memoryview, bytes]:
    """`part(frame)` as three buffers for one `sendmsg`, the JPEG not copied; with `chunked`,
    framed as one HTTP/1.1 chunk."""
    data = frame.data
    head = (b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n"
            % (len(data), frame.t_capture_ns / 1e9))
    if not chunked:
        return head, data, TAIL
    size = b"%X\r\n" % (len(head) + len(data) + len(TAIL))
    return size + head, data, TAIL + b"\r\n"


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


class StreamStats:
    """Per camera: MJPEG clients open now, parts delivered and frames skipped (a newer frame
    came while a client's previous part was still on its way). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cams: dict[int, dict[str, int]] = {}

    def _entry(self, cam: int) -> dict[str, int]:
        entry = self._cams.get(cam)
        if entry is None:
            entry = self._cams[cam] = {"clients": 0, "delivered": 0, "skipped": 0}
        return entry

    def opened(self, cam: int) -> None:
        with self._lock:
            self._entry(cam)["clients"] += 1

    def closed(self, cam: int) -> None:
        with self._lock:
            entry = self._entry(cam)
            entry["clients"] = max(0, entry["clients"] - 1)

    def add(self, cam: int, delivered: int = 0, skipped: int = 0) -> None:
        with self._lock:
            entry = self._entry(cam)
            entry["delivered"] += delivered
            entry["skipped"] += skipped

    def snapshot(self) -> dict[int, dict[str, int]]:
        """{cam: {"clients", "delivered", "skipped"}}, a copy."""
        with self._lock:
            return {cam: dict(entry) for cam, entry in self._cams.items()}


@dataclass(eq=False)
class StreamClient:
    """One handed-over MJPEG connection, owned by the fan-out thread once added."""

    cam: int
    sock: socket.socket
    chunked: bool
    stats: StreamStats
    gone: Callable[[], bool] = lambda: False  # client left or the gateway is stopping
    done: threading.Event = field(default_factory=threading.Event)
    last: wire.Frame | None = None  # the newest frame handed to the socket
    pending: Sequence[memoryview] = ()  # the unsent rest of its part
    newer_waiting: bool = False  # a frame newer than `last` came while `pending` was unsent
    registered: bool = False
    delivered: int = 0
    skipped: int = 0


class MjpegFanout:
    """Writes the newest frame of each camera to every handed-over stream of this process,
    each client at its own pace, from one thread.

    It wakes when the fabric delivers a frame of a watched camera (a subscriber listener) or
    a slow client's socket can take more; `FanoutRegistry.of(cache)` gives each cache one.
    """

    def __init__(self, cache: FrameCache) -> None:
        # Weakly: the registry keeps a fan-out per cache only for as long as the cache lives.
        self._cache = weakref.ref(cache)
        self.stats = StreamStats()  # for streams not given their own
        self._lock = threading.Lock()
        self._clients: dict[int, set[StreamClient]] = {}
        self._watched: frozenset[int] = frozenset()
        self._added: list[StreamClient] = []
        self._removed: list[StreamClient] = []
        self._dirty: set[int] = set()
        self._newest: dict[int, tuple[wire.Frame, tuple[memoryview, ...], tuple[memoryview, ...]]] = {}
        # Made with the thread, on the first stream: a fan-out never used holds no descriptor.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._ended = False
        cache.subscriber.add_listener(self._on_message)

    # -- any thread ----------------------------------------------------------------------------
    def add(self, client: StreamClient) -> None:
        """Start serving `client` (its stats count it open at once)."""
        client.stats.opened(client.cam)
        with self._lock:
            if self._ended:
                ended = True
            else:
                ended = False
                self._added.append(client)
                self._dirty.add(client.cam)
                if self._thread is None:
                    self._wake_r, self._wake_w = socket.socketpair()
                    self._wake_r.setblocking(False)
                    self._wake_w.setblocking(False)
                    self._selector = selectors.DefaultSelector()
                    self._selector.register(self._wake_r, selectors.EVENT_READ)
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="camfabric-mjpeg-fanout")
                    self._thread.start()
        if ended:
            self._end(client)
        else:
            self._poke()

    def clients(self) -> list[dict[str, int]]:
        """Every open client: camera, parts delivered, frames skipped (a racy but safe read)."""
        return [{"cam": c.cam, "delivered": c.delivered, "skipped": c.skipped}
                for cs in list(self._clients.values()) for c in list(cs)]

    def remove(self, client: StreamClient) -> None:
        """Stop serving `client`; its `done` is set once its socket is closed."""
        with self._lock:
            self._removed.append(client)
        self._poke()

    def _on_message(self, msg: wire.Message) -> None:
        # On the subscriber's receive thread: note the camera and wake the fan-out.
        if isinstance(msg, wire.Frame) and msg.cam in self._watched:
            with self._lock:
                self._dirty.add(msg.cam)
            self._poke()

    def _poke(self) -> None:
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # already awake (buffer full), or shut down
            pass

    # -- the fan-out thread --------------------------------------------------------------------
    def _run(self) -> None:
        next_check = time.monotonic() + WAKE_INTERVAL_S
        try:
            while (cache := self._cache()) is not None and not cache.closed:
                del cache  # not held across the wait
                if time.monotonic() >= next_check:  # clients that left a silent camera's stream
                    next_check = time.monotonic() + WAKE_INTERVAL_S
                    for client in [c for cs in self._clients.values() for c in cs if c.gone()]:
                        self._end(client)
                for key, _ in self._selector.select(WAKE_INTERVAL_S):
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                    elif key.data is not None:
                        self._flush(key.data)
                with self._lock:
                    added, self._added = self._added, []
                    removed, self._removed = self._removed, []
                    dirty, self._dirty = self._dirty, set()
                for client in added:
                    self._clients.setdefault(client.cam, set()).add(client)
                for client in removed:
                    self._end(client)
                if added or removed:
                    self._watched = frozenset(cam for cam, cs in self._clients.items() if cs)
                for cam in dirty:
                    self._offer(cam)
        except Exception:  # never leave clients hanging on a dead thread
            log.exception("MJPEG fan-out failed; ending its streams")
        finally:
            with self._lock:
                self._ended = True
                leftover = self._added + self._removed
                self._added, self._removed = [], []
            for client in [*leftover, *(c for cs in self._clients.values() for c in cs)]:
                self._end(client)
            wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, None
            self._selector.close()
            wake_r.close()
            wake_w.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _offer(self, cam: int) -> None:
        """A new frame of `cam` (maybe): send it to every idle client, mark it for busy ones."""
        cache = self._cache()
        if cache is None:
            return
        try:
            frame = cache.latest(cam)
        except UnknownCamera:
            return
        if frame is None:
            return
        newest = self._newest.get(cam)
        if newest is None or newest[0] is not frame:
            self._newest[cam] = (frame, tuple(map(memoryview, _part_buffers(frame, False))),
                                 tuple(map(memoryview, _part_buffers(frame, True))))
        counts: dict[int, list[Any]] = {}  # per StreamStats: [stats, delivered, skipped]
        for client in list(self._clients.get(cam, ())):
            if client.last is frame:
                continue
            count = counts.get(id(client.stats))
            if count is None:
                count = counts[id(client.stats)] = [client.stats, 0, 0]
            if client.pending:
                if client.newer_waiting:
                    client.skipped += 1
                    count[2] += 1
                client.newer_waiting = True
            elif self._send_newest(client):
                count[1] += 1
        for stats, delivered, skipped in counts.values():
            stats.add(cam, delivered=delivered, skipped=skipped)

    def _send_newest(self, client: StreamClient) -> bool:
        """Hand the newest part to `client`'s socket; True when all of it left at once."""
        frame, plain, chunked = self._newest[client.cam]
        client.last, client.newer_waiting = frame, False
        return self._write(client, chunked if client.chunked else plain)

    def _flush(self, client: StreamClient) -> None:
        """`client`'s socket can take more: the rest of its part, then the newest frame."""
        if not self._write(client, client.pending):
            return
        client.stats.add(client.cam, delivered=1)
        newest = self._newest.get(client.cam)
        if client in self._clients.get(client.cam, ()) and newest is not None \
                and newest[0] is not client.last and self._send_newest(client):
            client.stats.add(client.cam, delivered=1)

    def _write(self, client: StreamClient, buffers: Sequence[memoryview]) -> bool:
        """One sendmsg; keeps what did not fit as `pending` and watches the socket for room.
        True when the part has left entirely (counted in `client.delivered`)."""
        try:
            sent = client.sock.sendmsg(buffers)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # the client hung up (EPIPE, ECONNRESET) or the socket closed
            log.debug("MJPEG client of camera %d gone: %s", client.cam, exc)
            self._end(client)
            return False
        rest = list(buffers)
        while rest and sent >= len(rest[0]):
            sent -= len(rest[0])
            del rest[0]
        if rest:
            if sent:
                rest[0] = rest[0][sent:]
            client.pending = rest
            if not client.registered:
                self._selector.register(client.sock, selectors.EVENT_WRITE, client)
                client.registered = True
            return False
        client.pending = []
        client.delivered += 1
        if client.registered:
            self._selector.unregister(client.sock)
            client.registered = False
        return True

    def _end(self, client: StreamClient) -> None:
        """Close `client`'s connection (both directions: Waitress's descriptor too) once."""
        if client.done.is_set():
            return
        cams = self._clients.get(client.cam)
        if cams is not None:
            cams.discard(client)
        if client.registered:
            self._selector.unregister(client.sock)
            client.registered = False
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already reset by the peer
            pass
        client.sock.close()
        client.stats.closed(client.cam)
        log.debug("MJPEG stream of camera %d closed: %d parts delivered, %d frames skipped",
                  client.cam, client.delivered, client.skipped)
        client.done.set()


class FanoutRegistry:
    """One `MjpegFanout` per FrameCache, made on the first stream that needs it."""

    _lock = threading.Lock()
    _fanouts: weakref.WeakKeyDictionary[FrameCache, MjpegFanout] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, cache: FrameCache) -> MjpegFanout:
        with cls._lock:
            fanout = cls._fanouts.get(cache)
            if fanout is None:
                fanout = cls._fanouts[cache] = MjpegFanout(cache)
            return fanout


def _waitress_connection(client_gone: Callable[[], bool] | None) -> tuple[Any, Any] | None:
    """(channel, task) of the Waitress connection serving this request, or None elsewhere.

    Waitress offers no public handle on the connection; the `waitress.client_disconnected`
    callable it puts in the environ is a method of the channel, and the gateway's channel
    class (server.py) records the task it is running, whose `chunked_response` says how the
    body must be framed.
    """
    channel = getattr(client_gone, "__self__", None)
    task = getattr(channel, "current_task", None)
    if task is None or not hasattr(channel, "total_outbufs_len") or not hasattr(task, "chunked_response"):
        return None
    return channel, task


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
        client_gone: Callable[[], bool] | None = None,
        stats: StreamStats | None = None,
    ) -> None:
        self.cache = cache
        self.cam = cam
        self.slots = slots
        self.stopping = stopping
        self._client_gone = client_gone
        self.client_gone = client_gone or (lambda: False)
        self.stats = stats if stats is not None else FanoutRegistry.of(cache).stats
        self.sent = 0
        self._last: wire.Frame | None = None
        self._closed = False
        self._started = False
        self._client: StreamClient | None = None
        self._fanout: MjpegFanout | None = None
        self._released = False
        self._counted = False  # counted open in `stats` by this iterator (not the fan-out)
        if cache.latest(cam) is None:
            self._closed = self._released = True
            slots.release()
            raise FrameTimeout(f"camera {cam} has not delivered a frame yet; retry shortly")

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
        found = _waitress_connection(self._client_gone)
        if found is None:
            self.stats.opened(self.cam)  # served by this iterator, counted here
            self._counted = True
            return
        channel, task = found
        if not task.has_body or getattr(task.request, "command", "") == "HEAD":  # headers only
            self._closed_without_client()
            return
        deadline = time.monotonic() + HANDOFF_TIMEOUT_S
        while channel.total_outbufs_len and self._alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        sock = channel.socket
        if channel.total_outbufs_len or sock is None or not self._alive():
            self._closed_without_client()
            return
        try:
            dup = sock.dup()
            dup.setblocking(False)
            dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, STREAM_NOTSENT_BYTES)
        except OSError as exc:
            log.debug("MJPEG stream of camera %d: connection gone before hand-over: %s", self.cam, exc)
            self._closed_without_client()
            return
        self._fanout = FanoutRegistry.of(self.cache)
        self._client = StreamClient(self.cam, dup, task.chunked_response, self.stats,
                                    gone=lambda: not self._alive())
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
        self.sent = client.delivered

    def _next_frame(self) -> wire.Frame | None:
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
        if self._counted:
            self._counted = False
            self.stats.closed(self.cam)
        if not self._closed:
            self._closed = True
            log.debug("MJPEG stream of camera %d closed after %d parts", self.cam, self.sent)
