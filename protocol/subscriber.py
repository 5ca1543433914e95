"""The receiving end of the fabric, and the public API for robotics code.

    with Subscriber("tcp://127.0.0.1:5550", cameras=[0, 2], encoding="bgr8") as sub:
        frame = sub.latest(0, timeout=2.0)     # newest frame of camera 0 (numpy: frame.image)
        for frame in sub:                      # every new frame, newest per camera
            ...

One background thread owns the SUB socket and drains it as fast as messages come, keeping
only the newest message per topic, so a slow consumer always sees the newest frame and never a
queue. What it had to skip is counted: `dropped` (sequence gaps: frames the network or the
publisher's high-water mark lost), `skipped` (frames replaced before the consumer took them),
`malformed` (messages that break the wire format — dropped, logged once per kind).

With `cameras=None` the subscriber listens to every camera's heartbeat (`meta/`) and subscribes
to each camera's frames as it appears.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import zmq

from ..logonce import LogOnce
from . import topics, wire
from .errors import CamfabricError, FrameTimeout, ProtocolError, UnknownCamera
from .link import configure_link
from .security import CurveClient, secure_client

Listener = Callable[[wire.Message], None]
# Cameras a subscriber made with cameras=None discovers at most; heartbeats of further camera
# ids are dropped (logged once), so made-up ids cannot grow its memory or its subscriptions.
MAX_DISCOVERED_CAMERAS = 1024


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """What a subscriber received and what it had to let go."""

    received: int
    dropped: int
    skipped: int
    duplicates: int
    malformed: int
    last_error: str


def captured_locally_ns(frame: wire.Frame) -> int:
    """When `frame` was captured, on this receiver's monotonic clock (network delay ignored)."""
    return frame.t_receive_ns - max(0, frame.t_publish_ns - frame.t_capture_ns)


class Subscriber:
    """Subscribes to camera frames (and any other topics) on one or more fabric endpoints."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        cameras: Iterable[int] | None = None,
        encoding: str | Sequence[str] = "jpeg",
        *,
        topics_extra: Iterable[bytes] = (),
        context: zmq.Context | None = None,
        curve: CurveClient | Mapping[str, CurveClient] | None = None,
        rcvhwm: int = 4,
        log: logging.Logger | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise CamfabricError("Subscriber needs at least one endpoint")
        self.cameras = None if cameras is None else frozenset(int(c) for c in cameras)
        self.encodings = (encoding,) if isinstance(encoding, str) else tuple(encoding)
        for enc in self.encodings:
            topics.frame(0, enc)  # raises ValueError on an unknown encoding
        self.context = context or zmq.Context.instance()
        self.log = log or logging.getLogger(__name__)
        self.curve = curve
        self.rcvhwm = rcvhwm
        self.clock = clock
        self._extra = tuple(topics_extra)
        self._cond = threading.Condition()
        self._frames: dict[tuple[int, str], wire.Frame] = {}
        self._metas: dict[int, wire.Meta] = {}
        self._others: dict[bytes, wire.Message] = {}
        self._pending: OrderedDict[tuple[int, str], wire.Frame] = OrderedDict()
        self._listeners: list[Listener] = []
        self._known_cams: set[int] = set()
        self._decode_stats = wire.DecodeStats()
        self._failures = LogOnce(self.log)
        self._received = self._dropped = self._skipped = self._duplicates = 0
        self._ctrl_addr = f"inproc://camfabric-subscriber-{id(self):x}"
        self._ctrl: zmq.Socket | None = None
        self._ctrl_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closed = False
        self._start_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> Subscriber:
        """Connect and start the receive thread."""
        self._ctrl = self.context.socket(zmq.PAIR)
        self._ctrl.linger = 0
        self._ctrl.bind(self._ctrl_addr)
        self._thread = threading.Thread(target=self._run, name="camfabric-subscriber", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise CamfabricError("subscriber did not start")
        if self._start_error is not None:
            self.close()
            raise self._start_error
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop the receive thread and close sockets (linger 0); wakes anyone waiting."""
        if self._closed:
            return
        self._closed = True
        with self._ctrl_lock:
            if self._ctrl is not None:
                try:
                    self._ctrl.send_multipart([b"stop", b""], flags=zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    self.log.debug("stop signal not sent: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._ctrl_lock:
            if self._ctrl is not None:
                self._ctrl.close(linger=0)
                self._ctrl = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading -----------------------------------------------------------------------------
    def latest(
        self,
        cam: int,
        timeout: float = 2.0,
        *,
        encoding: str | None = None,
        newer_than: wire.Frame | None = None,
        captured_after_ns: int | None = None,
    ) -> wire.Frame:
        """The newest frame of `cam`, waiting up to `timeout` s for one to exist.

        `newer_than` waits for a frame other than that one; `captured_after_ns` (this host's
        monotonic clock) for one captured after that moment. Raises `FrameTimeout`, or
        `UnknownCamera` for a camera outside the `cameras` this subscriber was made for.
        """
        cam = int(cam)
        if self.cameras is not None and cam not in self.cameras:
            raise UnknownCamera(cam)
        key = (cam, encoding or self.encodings[0])

        def ready() -> wire.Frame | None:
            frame = self._frames.get(key)
            if frame is None or (newer_than is not None and _same(frame, newer_than)):
                return None
            if captured_after_ns is not None and captured_locally_ns(frame) <= captured_after_ns:
                return None
            return frame

        with self._cond:
            frame = self._cond.wait_for(lambda: ready() or self._closed, timeout)
        if isinstance(frame, wire.Frame):
            return frame
        raise FrameTimeout(f"no {'fresh ' if captured_after_ns else ''}frame from camera {cam} "
                           f"within {timeout:g} s")

    def poll(self, timeout: float | None = None) -> wire.Frame | None:
        """The next new frame of any camera (oldest waiting first), or None on timeout/close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending or self._closed, timeout):
                return None
            if not self._pending:
                return None
            _, frame = self._pending.popitem(last=False)
            return frame

    def __iter__(self) -> Iterator[wire.Frame]:
        while not self._closed:
            frame = self.poll(timeout=0.5)
            if frame is not None:
                yield frame

    def meta(self, cam: int) -> wire.Meta | None:
        """The newest heartbeat of `cam`, or None if none arrived yet."""
        return self._metas.get(int(cam))

    def metas(self) -> dict[int, wire.Meta]:
        """The newest heartbeat of every camera seen so far."""
        return dict(self._metas)

    def message(self, topic: bytes) -> wire.Message | None:
        """The newest non-frame message on exactly `topic` (scan, status, world)."""
        return self._others.get(topic)

    def messages(self, prefix: bytes) -> dict[bytes, wire.Message]:
        """The newest non-frame message of every topic under `prefix`."""
        return {t: m for t, m in self._others.items() if t.startswith(prefix)}

    @property
    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            received=self._received, dropped=self._dropped, skipped=self._skipped,
            duplicates=self._duplicates, malformed=self._decode_stats.malformed,
            last_error=self._decode_stats.last_error,
        )

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(message)` on the receive thread for every new message; keep it quick."""
        self._listeners.append(listener)

    def subscribe(self, prefix: bytes) -> None:
        """Subscribe to one more topic prefix (thread-safe)."""
        self._control(b"sub", prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Drop a topic prefix subscribed earlier (thread-safe)."""
        self._control(b"unsub", prefix)

    def _control(self, command: bytes, arg: bytes) -> None:
        with self._ctrl_lock:
            if self._ctrl is None:
                raise CamfabricError("subscriber is not running")
            self._ctrl.send_multipart([command, arg])

    # -- the receive thread ------------------------------------------------------------------
    def _initial_topics(self) -> list[bytes]:
        wanted = list(self._extra)
        if self.cameras is None:
            wanted.append(topics.META.encode())
        else:
            for cam in sorted(self.cameras):
                wanted.append(topics.meta(cam))
                wanted.extend(topics.frame(cam, enc) for enc in self.encodings)
                self._known_cams.add(cam)
        return wanted

    def _connect(self, sub: zmq.Socket) -> None:
        for endpoint in self.endpoints:
            keys = self.curve.get(endpoint) if isinstance(self.curve, Mapping) else self.curve
            if keys is not None:
                secure_client(sub, keys, self.log, endpoint)
            sub.connect(endpoint)

    def _run(self) -> None:
        ctrl = sub = None
        try:
            sub = self.context.socket(zmq.SUB)
            sub.linger = 0
            sub.rcvhwm = self.rcvhwm
            sub.reconnect_ivl = 100
            sub.reconnect_ivl_max = 1000
            configure_link(sub)
            for prefix in self._initial_topics():
                sub.subscribe(prefix)
            self._connect(sub)
            ctrl = self.context.socket(zmq.PAIR)
            ctrl.linger = 0
            ctrl.connect(self._ctrl_addr)
        except Exception as exc:  # handed to start(), which raises it in the caller
            self._start_error = exc
            for sock in (sub, ctrl):
                if sock is not None:
                    sock.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(ctrl, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if ctrl in events:
                    command, arg = ctrl.recv_multipart()
                    if command == b"stop":
                        return
                    if command == b"sub":
                        sub.subscribe(arg)
                    elif command == b"unsub":
                        sub.unsubscribe(arg)
                if sub in events:
                    self._drain(sub)
        finally:
            sub.close(linger=0)
            ctrl.close(linger=0)

    def _drain(self, sub: zmq.Socket) -> None:
        for _ in range(256):  # bounded, so a stop command is never starved
            try:
                parts = sub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            # Nothing in one message may stop this thread: a format error is counted and
            # logged once per kind; anything else (a bug met by odd input) the same way.
            try:
                msg = wire.decode(parts, t_receive_ns=self.clock())
                self._accept(msg, sub)
            except Exception as exc:
                self._decode_stats.count_malformed(exc)
                kind = wire.failure_kind(exc)
                if isinstance(exc, ProtocolError):
                    self._failures.warning(kind, "dropped a malformed message from the fabric "
                                           "(%s); further ones of this kind are only counted", exc)
                else:
                    self._failures.error(kind, "a message from the fabric failed in the receive "
                                         "loop; it was dropped and further ones of this kind are "
                                         "only counted", exc_info=exc)

    def _accept(self, msg: wire.Message, sub: zmq.Socket) -> None:
        with self._cond:
            if isinstance(msg, wire.Frame):
                if not self._accept_frame(msg):
                    return
            elif isinstance(msg, wire.Meta):
                if msg.cam not in self._metas and len(self._metas) >= MAX_DISCOVERED_CAMERAS:
                    self._failures.warning("cameras.cap", "ignoring heartbeats of camera %d and "
                                           "any further new camera: %d cameras known already",
                                           msg.cam, MAX_DISCOVERED_CAMERAS)
                    return
                self._metas[msg.cam] = msg
                if self.cameras is None and msg.cam not in self._known_cams:
                    self._known_cams.add(msg.cam)
                    for enc in self.encodings:
                        sub.subscribe(topics.frame(msg.cam, enc))
            else:
                self._others[msg.topic] = msg
            self._received += 1
            self._cond.notify_all()
        for listener in self._listeners:
            try:
                listener(msg)
            except Exception as exc:
                self._failures.error(f"listener.{type(exc).__name__}", "subscriber listener "
                                     "failed on %r (logged once per kind)", msg.topic, exc_info=exc)

    def _accept_frame(self, frame: wire.Frame) -> bool:
        if self.cameras is not None and frame.cam not in self.cameras:
            return False
        key = (frame.cam, frame.encoding)
        prev = self._frames.get(key)
        if prev is not None and _same(prev, frame):
            self._duplicates += 1  # a last-value re-send meant for a late joiner
            return False
        if prev is not None and prev.node == frame.node and frame.seq > prev.seq + 1:
            self._dropped += frame.seq - prev.seq - 1
        self._frames[key] = frame
        if key in self._pending:
            self._skipped += 1
            del self._pending[key]
        self._pending[key] = frame
        return True


def _same(a: wire.Frame, b: wire.Frame) -> bool:
    return a.seq == b.seq and a.t_capture_ns == b.t_capture_ns and a.node == b.node
