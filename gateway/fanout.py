"""MjpegFanout: one thread writing the newest frame of each camera to many stream sockets,
each client at its own pace.

A client is a non-blocking socket that takes parts. A part is written only when the previous
one has left the server entirely, and it is always the newest frame: what a slow client has
not taken yet is never queued behind it, and the frames that came meanwhile are skipped and
counted (`StreamStats`). The part's buffers are built once per frame and shared by every
client (no copy of the JPEG); a client that keeps up takes its part in one `sendmsg`, and only
a slow one is watched for room with the selector. mjpeg.py hands connections over to it.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import wire
from ..protocol.errors import UnknownCamera
from .cache import FrameCache

# How often the fan-out looks up from its wait to notice clients that left a silent stream.
WAKE_INTERVAL_S = 0.25

Framer = Callable[[wire.Frame, bool], Sequence[bytes | memoryview]]

log = logging.getLogger(__name__)


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
    a slow client's socket can take more. `framer(frame, chunked)` gives a frame's part as
    buffers for one `sendmsg` (HTTP/1.1 chunk framing included when `chunked`).
    """

    def __init__(self, cache: FrameCache, framer: Framer) -> None:
        # Weakly: a registry may keep a fan-out per cache only for as long as the cache lives.
        self._cache = weakref.ref(cache)
        self.framer = framer
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
            self._newest[cam] = (frame, tuple(map(memoryview, self.framer(frame, False))),
                                 tuple(map(memoryview, self.framer(frame, True))))
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
