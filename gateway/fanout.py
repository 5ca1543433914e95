"""MjpegFanout: one thread writing the newest frame of each camera to many stream sockets,
each client at its own pace.

A client is a non-blocking socket that takes parts. A part is written only when the previous
one has left the server entirely and, where the kernel tells (Linux's TCP_INFO), when the
reader has also read what it was sent before; and it is always the newest frame. What a slow
client has not taken yet is never queued behind it, and the frames that came meanwhile are
skipped and counted (`StreamStats`). The part's buffers are built once per frame and shared by
every client (no copy of the JPEG); a client that keeps up takes its part in one `sendmsg`, and
only a slow one is watched for room with the selector. mjpeg.py hands connections over to it.

The reader's own receive buffer. Linux grows a reader's receive buffer when it drains whole
parts in bursts (robot code taking one part per 0.5 s: 0.8 MB, two or three 720p parts), and
what waits there is as stale as what waits in the server. Its size is not visible to the
server, but the TCP window the reader advertises is its free room there: a part is sent only
when that room, less what is still on its way, is back to the largest the reader has shown
(its room with nothing unread), within `UNREAD_ALLOWANCE_BYTES`. A reader announces freed room
only when its window at least doubles, so a reader that has read its part may stay silent:
while a newer frame waits for it, the fan-out sends the next part's first bytes ahead
(`Content-Type: image/jpeg\r\nContent-Length: `, one at a time, see mjpeg.py), each answered
by an acknowledgement that carries the reader's window as it is now.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
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
# Unread bytes a reader may still hold when its next part is sent: the window's granularity
# (Linux aligns it to its scale, and rounds small windows to the segment size).
UNREAD_ALLOWANCE_BYTES = 32 * 1024
# While a newer frame waits for a reader to read its part, one byte of the next part goes
# ahead every PROBE_MIN_S at first, then every PROBE_BACKOFF of the time waited so far: a
# reader taking a part per second is seen within ~0.1 s, and the part's 42 leading bytes last
# about ten seconds of waiting.
PROBE_MIN_S = 0.05
PROBE_BACKOFF = 0.1
# How often waiting readers' windows are looked at, at most.
TEND_INTERVAL_S = 0.02
# A newer frame waiting this long is sent anyway, and the window seen then counts as the
# reader's room with nothing unread: a reader whose buffer shrank is never stalled for good.
HOLD_MAX_S = 10.0

Framer = Callable[[wire.Frame, bool, int], Sequence[bytes | memoryview]]
Prober = Callable[[bool, int], bytes | None]

# struct tcp_info (linux/tcp.h) from tcpi_bytes_acked (offset 120) to tcpi_snd_wnd (228, Linux
# 5.4+): bytes_acked, notsent_bytes (144), bytes_sent (200), bytes_retrans (208), snd_wnd.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_INFO_LEN = 232
_TCP_INFO_FIELDS = struct.Struct("=Q16xI52xQQ12xI")

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
    part_pending: bool = False  # `pending` is the rest of a part (not of a probe byte)
    window_max: int = 0  # the largest window its reader advertised: its room with nothing unread
    held_since: float | None = None  # a newer frame waits for the reader to read its part
    probe_at: float = 0.0
    probed: int = 0  # bytes of the next part sent ahead (`Prober`)
    interval_s: float = 0.0  # `?fps=N`: at least 1/N s between parts (0: as the camera goes)
    due_at: float = 0.0  # with an interval: when its next part may go (monotonic)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the client closed its side (or reset it), without taking any of its bytes."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reader_has_room(client: StreamClient, room: tuple[int, int] | None) -> bool:
    """Whether `client`'s reader has read (nearly) all it was sent, as its window `room`
    (`tcp_room`) tells; True where the kernel does not tell."""
    if room is None:
        return True
    window, queued = room
    client.window_max = max(client.window_max, window)
    return window - queued >= client.window_max - UNREAD_ALLOWANCE_BYTES


def tcp_room(sock: socket.socket) -> tuple[int, int] | None:
    """(the window the reader last advertised, bytes on their way to it: unacknowledged or not
    sent yet) from Linux's TCP_INFO; None where the kernel does not tell (another system, a
    kernel before 5.4, a socket that is not TCP)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < _TCP_INFO_LEN:
        return None
    acked, notsent, sent, resent, window = _TCP_INFO_FIELDS.unpack_from(info, 120)
    return window, max(0, sent - resent - acked) + notsent


class MjpegFanout:
    """Writes the newest frame of each camera to every handed-over stream of this process,
    each client at its own pace, from one thread.

    It wakes when the fabric delivers a frame of a watched camera (a subscriber listener), a
    slow client's socket can take more, or a reader that was sent a probe may have answered.
    `framer(frame, chunked, probed)` gives a frame's part as buffers for one `sendmsg` (HTTP/1.1
    chunk framing included when `chunked`), less its first `probed` bytes, which went ahead as
    `prober(chunked, index)` gave them (None: no more to send ahead).
    """

    def __init__(self, cache: FrameCache, framer: Framer, prober: Prober) -> None:
        # Weakly: a registry may keep a fan-out per cache only for as long as the cache lives.
        self._cache = weakref.ref(cache)
        self.framer = framer
        self.prober = prober
        self._held: set[StreamClient] = set()
        self._paced: set[StreamClient] = set()  # waiting for their interval to pass (`?fps=N`)
        self._tend_at = 0.0
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
                    for client in [c for cs in self._clients.values() for c in cs
                                   if c.gone() or _hung_up(c.sock)]:
                        self._end(client)
                wait = TEND_INTERVAL_S if self._held else WAKE_INTERVAL_S
                if self._paced:
                    wait = min(wait, max(0.0, min(c.due_at for c in self._paced) - time.monotonic()))
                for key, _ in self._selector.select(wait):
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
                if self._held and time.monotonic() >= self._tend_at:
                    self._tend_at = time.monotonic() + TEND_INTERVAL_S
                    self._tend_held()
                if self._paced:
                    self._send_due()
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
            # Only a peek: the streams' own requests keep their camera wanted while they are
            # open (mjpeg.py). Polled per frame, a wanting read would keep it wanted for good.
            frame = cache.view(cam).frame
        except UnknownCamera:
            return
        if frame is None:
            return
        newest = self._newest.get(cam)
        if newest is None or newest[0] is not frame:
            self._newest[cam] = (frame, tuple(map(memoryview, self.framer(frame, False, 0))),
                                 tuple(map(memoryview, self.framer(frame, True, 0))))
        counts: dict[int, list[Any]] = {}  # per StreamStats: [stats, delivered, skipped]
        for client in list(self._clients.get(cam, ())):
            if client.last is frame:
                continue
            count = counts.get(id(client.stats))
            if count is None:
                count = counts[id(client.stats)] = [client.stats, 0, 0]
            if client.pending or client.held_since is not None or client in self._paced:
                if client.newer_waiting:
                    client.skipped += 1
                    count[2] += 1
                client.newer_waiting = True
            elif self._send_or_hold(client):
                count[1] += 1
        for stats, delivered, skipped in counts.values():
            stats.add(cam, delivered=delivered, skipped=skipped)

    def _send_newest(self, client: StreamClient) -> bool:
        """Hand the newest part to `client`'s socket; True when all of it left at once."""
        frame, plain, chunked = self._newest[client.cam]
        client.last, client.newer_waiting = frame, False
        if client.interval_s:
            # The next part one interval after this one was due, so the pace does not drift; a
            # part sent late by more than an interval starts the count again.
            now = time.monotonic()
            start = client.due_at if now - client.due_at < client.interval_s else now
            client.due_at = start + client.interval_s
        if client.probed:  # its first bytes went ahead
            buffers = tuple(map(memoryview, self.framer(frame, client.chunked, client.probed)))
            client.probed = 0
        else:
            buffers = chunked if client.chunked else plain
        return self._write(client, buffers)

    def _flush(self, client: StreamClient) -> None:
        """`client`'s socket can take more: the rest of its part, then the newest frame."""
        was_part = client.part_pending
        if not self._write(client, client.pending, part=was_part):
            return
        if was_part:
            client.stats.add(client.cam, delivered=1)
        newest = self._newest.get(client.cam)
        if client not in self._clients.get(client.cam, ()) or newest is None \
                or newest[0] is client.last or client.held_since is not None:
            return
        if self._send_or_hold(client):
            client.stats.add(client.cam, delivered=1)

    # -- the reader's receive buffer -----------------------------------------------------------
    def _send_or_hold(self, client: StreamClient) -> bool:
        """The newest part to `client` if its interval has passed and its reader has room for
        it, else wait (`_send_due`, `_hold`); True when a whole part left at once."""
        if client.interval_s and time.monotonic() < client.due_at:
            client.newer_waiting = True
            self._paced.add(client)
            return False
        if _reader_has_room(client, tcp_room(client.sock)):
            return self._send_newest(client)
        self._hold(client)
        return False

    def _send_due(self) -> None:
        """Send the newest part to every paced client whose interval has passed."""
        now = time.monotonic()
        for client in [c for c in self._paced if c.due_at <= now]:
            self._paced.discard(client)
            newest = self._newest.get(client.cam)
            if client.done.is_set() or newest is None or newest[0] is client.last \
                    or client.pending or client.held_since is not None:
                continue
            if self._send_or_hold(client):
                client.stats.add(client.cam, delivered=1)

    def _hold(self, client: StreamClient) -> None:
        """A newer frame waits for `client`'s reader to read its part (`_tend_held`)."""
        now = time.monotonic()
        client.held_since, client.newer_waiting = now, True
        client.probe_at = now
        self._held.add(client)
        self._tend_at = now  # its first probe at once

    def _tend_held(self) -> None:
        """Send the newest part to every waiting reader whose window shows it has read its
        last; probe the others; give up waiting after HOLD_MAX_S."""
        now = time.monotonic()
        for client in list(self._held):
            newest = self._newest.get(client.cam)
            if client.done.is_set() or newest is None or newest[0] is client.last:
                self._release(client)
                continue
            if client.pending:  # the rest of a probe: the selector watches its socket
                continue
            room = tcp_room(client.sock)
            given_up = now - client.held_since >= HOLD_MAX_S
            if _reader_has_room(client, room) or given_up:
                if given_up and room is not None:
                    client.window_max = room[0]
                self._release(client)
                if self._send_newest(client):
                    client.stats.add(client.cam, delivered=1)
            elif now >= client.probe_at and room is not None and room[1] == 0:
                # Nothing is on its way, so no acknowledgement is due: ask for one.
                probe = self.prober(client.chunked, client.probed)
                client.probe_at = now + max(PROBE_MIN_S, PROBE_BACKOFF * (now - client.held_since))
                if probe is not None:
                    client.probed += 1
                    self._write(client, (memoryview(probe),), part=False)

    def _release(self, client: StreamClient) -> None:
        client.held_since = None
        self._held.discard(client)

    def _write(self, client: StreamClient, buffers: Sequence[memoryview], part: bool = True) -> bool:
        """One sendmsg; keeps what did not fit as `pending` and watches the socket for room.
        True when all has left (a whole `part` is counted in `client.delivered`)."""
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
            client.pending, client.part_pending = rest, part
            if not client.registered:
                self._selector.register(client.sock, selectors.EVENT_WRITE, client)
                client.registered = True
            return False
        client.pending = []
        client.delivered += part
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
            if not cams:  # its frames need no waking of this thread any more
                self._watched = self._watched - {client.cam}
        self._release(client)
        self._paced.discard(client)
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
