"""The receiving end of the fabric, and the public API for robotics code.

    with Subscriber("tcp://127.0.0.1:5550", cameras=[0, 2], encoding="bgr8") as sub:
        frame = sub.latest(0, timeout=2.0)     # newest frame of camera 0 (numpy: frame.image)
        for frame in sub:                      # every new frame, newest per camera
            ...

One background thread owns the SUB socket and drains it as fast as messages come, keeping
only the newest message per topic, so a slow consumer always sees the newest frame and never a
queue. What it had to skip is counted: `dropped` (sequence gaps: frames the network or the
publisher's high-water mark lost — never more than a camera could have captured between the
two frames, plus a few dozen, so a forged `seq` cannot inflate it), `skipped` (frames replaced
before the consumer took them), `malformed` (messages that break the wire format — dropped,
logged once per kind).

It always listens to every camera's heartbeat (`meta/`), so it knows which cameras exist.
Frames are subscribed

- for the `cameras` given (every announced camera with `cameras=None`), for the whole life of
  the subscriber — the robot-code default; or
- with `on_demand=True`, only while someone wants them: `latest(cam)` and `want(cam)` subscribe
  a camera's frames, `watching(cam)` holds the subscription for a block, and the receive thread
  unsubscribes a camera nobody wanted for `idle_s` seconds. The node then encodes only what is
  actually waited for (a service that needs one frame per 10 s subscribes around its interval).

Ages are honest: a frame's age includes the time it spent in flight beyond its link's usual
(`protocol.delay.LinkDelay`), so frames that waited out a partition in a queue look as old as
they are. Every mistake is a typed error: a malformed endpoint (`EndpointError`) or encoding
(`EncodingError`) at construction, a camera nobody announces (`UnknownCamera`, naming the
announced ones), a timeout that says whether anything at all was heard (`FrameTimeout.heard`),
use after `close()` (`ClosedError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import zmq

from ..runtime.logonce import LogOnce
from ..runtime.threads import Background, Ready, start_thread
from . import topics, wire
from .delay import LinkDelay
from .demand import Demand
from .endpoint import check_endpoint
from .errors import CamfabricError, ClosedError, FrameTimeout, ProtocolError, UnknownCamera
from .link import configure_link
from .mailbox import Mailbox
from .reachability import Reachability
from .security import HANDSHAKE_EVENTS, CurveClient, handshake_failure, secure_client
from .sync import FrameSet, FrameSync

Listener = Callable[[wire.Message], None]
# Cameras a subscriber made with cameras=None discovers at most; heartbeats of further camera
# ids are dropped (logged once), so made-up ids cannot grow its memory or its subscriptions.
MAX_DISCOVERED_CAMERAS = 1024

DEFAULT_IDLE_S = 10.0
SWEEP_INTERVAL_MS = 200
MAX_CAMERAS = 4096  # cameras (and other topics) remembered; beyond it, new ones are ignored
# A sequence gap counts as drops up to what a camera could have captured in between, plus this
# many frames (frames sent back to back by a test or a burst), so a forged `seq` can add a few
# dozen at most, never 4.6e21.
GAP_SLACK = 64


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
    """When `frame` was captured, on this receiver's monotonic clock (its delay in flight
    beyond the link's usual included)."""
    return (frame.t_receive_ns - max(0, frame.t_publish_ns - frame.t_capture_ns)
            - frame.t_delay_ns)


class Subscriber(Background):
    """Subscribes to camera frames (and any other topics) on one or more fabric endpoints."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        cameras: Iterable[int] | None = None,
        encoding: str | Sequence[str] = "jpeg",
        *,
        on_demand: bool = False,
        idle_s: float = DEFAULT_IDLE_S,
        topics_extra: Iterable[bytes] = (),
        context: zmq.Context | None = None,
        curve: CurveClient | Mapping[str, CurveClient] | None = None,
        rcvhwm: int = 4,
        log: logging.Logger | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        flight_clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """`clock` stamps arrivals (`t_receive_ns`) and measures waits; a test may move it by
        hand. `flight_clock` is the monotonic clock time in flight is measured on: it is set
        against the publishers' wall clocks, which a hand-moved clock does not follow."""
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise CamfabricError("Subscriber needs at least one endpoint, e.g. 'tcp://127.0.0.1:5550'")
        for endpoint in self.endpoints:
            check_endpoint(endpoint)
        self.cameras = None if cameras is None else frozenset(int(c) for c in cameras)
        self.encodings = (encoding,) if isinstance(encoding, str) else tuple(encoding)
        if not self.encodings:
            raise CamfabricError("Subscriber needs at least one encoding, e.g. 'jpeg'")
        for enc in self.encodings:
            topics.check_encoding(enc)
        self.on_demand = on_demand
        self.demand: Demand[tuple[int, str]] = Demand(int(idle_s * 1e9))
        self.context = context or zmq.Context.instance()
        self.log = log or logging.getLogger(__name__)
        self.curve = curve
        self.rcvhwm = rcvhwm
        self.clock = clock
        self.flight_clock = flight_clock
        self.delay = LinkDelay()
        self._extra = tuple(topics_extra)
        self._cond = threading.Condition()
        self._frames: dict[tuple[int, str], wire.Frame] = {}
        self._metas: dict[int, wire.Meta] = {}
        self._others: dict[bytes, wire.Message] = {}
        self._pending: OrderedDict[tuple[int, str], wire.Frame] = OrderedDict()
        self._listeners: list[Listener] = []
        self._subscribed: set[tuple[int, str]] = set()  # frame topics subscribed now
        self._decode_stats = wire.DecodeStats()
        self._heard = 0
        self._framed: set[int] = set()  # cameras whose frames arrived (even without heartbeat)
        self._failures = LogOnce(self.log)
        self._received = self._dropped = self._skipped = self._duplicates = 0
        self._ctrl: Mailbox[tuple[bytes, bytes]] | None = None  # made by start()
        self.reachability = Reachability(self.context, self.endpoints, on_event=self._on_link_event)
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> Subscriber:
        """Connect and start the receive thread."""
        if self._closed:
            raise ClosedError("this Subscriber was closed; make a new one")
        if self._started:
            return self
        self._started = True
        self._ctrl = Mailbox(1024)
        try:
            self._thread = start_thread(self._run, name="camfabric-subscriber", timeout=timeout)
        except zmq.ZMQError as exc:
            self.close()
            raise CamfabricError(f"cannot subscribe to {', '.join(self.endpoints)}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop the receive thread, which closes its socket (linger 0); wakes anyone waiting."""
        if self._closed:
            return
        self._closed = True
        if self._ctrl is None:  # never started
            return
        self._ctrl.put((b"stop", b""))
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._ctrl.close()
        with self._cond:
            self._cond.notify_all()

    stop = close  # what leaving a `with` block calls

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Subscriber is closed: use it inside its `with` block, "
                              "or make a new one")
        if not self._started:
            raise ClosedError("this Subscriber is not started: use `with Subscriber(...) as "
                              "sub:` or call start() first")

    # -- reading -----------------------------------------------------------------------------
    def latest(
        self,
        cam: int,
        timeout: float = 2.0,
        *,
        encoding: str | None = None,
        newer_than: wire.Frame | None = None,
        captured_after_ns: int | None = None,
        max_age_s: float | None = None,
    ) -> wire.Frame:
        """The newest frame of `cam`, waiting up to `timeout` s for one to exist.

        `newer_than` waits for a frame other than that one; `captured_after_ns` (this host's
        monotonic clock) for one captured after that moment; `max_age_s` for one at most that
        old. With `on_demand`, this subscribes the camera's frames (see `want`). Raises
        `FrameTimeout` (`.heard` False when nothing at all came from the endpoints),
        `UnknownCamera` for a camera nobody announces or outside this subscriber's `cameras`,
        `ClosedError` after `close()`.
        """
        self._check_open()
        cam = int(cam)
        enc = topics.check_encoding(encoding) if encoding is not None else self.encodings[0]
        if self.cameras is not None and cam not in self.cameras:
            raise UnknownCamera(cam, detail=f"this Subscriber was made for cameras "
                                f"{sorted(self.cameras)}; add it to `cameras=`")
        if self.on_demand:
            self.want(cam, enc)
        key = (cam, enc)
        max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)

        def ready() -> wire.Frame | None:
            frame = self._frames.get(key)
            if frame is None or (newer_than is not None and _same(frame, newer_than)):
                return None
            if captured_after_ns is not None and captured_locally_ns(frame) <= captured_after_ns:
                return None
            if max_age_ns is not None and frame.age_ns(self.clock()) > max_age_ns:
                return None
            return frame

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame = ready()
                remaining = deadline - time.monotonic()
                if frame is not None or self._closed or remaining <= 0:
                    break
                # Wake now and then: a frame can grow too old while we wait (max_age_s).
                self._cond.wait(min(remaining, 0.5))
        if frame is not None:
            return frame
        if self._closed:
            raise ClosedError(f"the Subscriber was closed while waiting for camera {cam}")
        raise self._timeout_error(cam, enc, timeout, fresh=captured_after_ns is not None
                                  or max_age_s is not None)

    def _timeout_error(self, cam: int, encoding: str, timeout: float,
                       fresh: bool) -> CamfabricError:
        where = ", ".join(self.endpoints)
        if not self._heard:
            return FrameTimeout(
                f"nothing at all was heard from {where} within {timeout:g} s (no heartbeat, no "
                f"frame): {self.reachability.describe()}. A node publishes on its `publish` "
                "endpoint (default tcp://127.0.0.1:5550), which is not the gateway's HTTP port",
                heard=False)
        with self._cond:
            meta = self._metas.get(cam)
            announced = sorted(self._metas)
            framed = cam in self._framed
        if meta is None and not framed:
            return UnknownCamera(cam, announced)
        if meta is None:
            return FrameTimeout(f"no {'fresh ' if fresh else ''}{encoding} frame from camera "
                                f"{cam} within {timeout:g} s (and no heartbeat from its node)")
        health = meta.health
        state = "connected" if health.get("connected", True) is not False else \
            f"disconnected ({health.get('last_error') or 'no error given'})"
        return FrameTimeout(f"no {'fresh ' if fresh else ''}{encoding} frame from camera {cam} "
                            f"within {timeout:g} s; its node {meta.node!r} says the camera is "
                            f"{state}")

    def want(self, cam: int, encoding: str | None = None) -> bool:
        """Say that `cam`'s frames are wanted now: subscribes them (on demand) if they are not,
        and keeps them subscribed for `idle_s` more seconds. True when this call subscribed
        them (the next frame is on its way: the node answers a new subscriber at once).
        A no-op (False) without `on_demand`."""
        self._check_open()
        if not self.on_demand:
            return False
        key = (int(cam), topics.check_encoding(encoding or self.encodings[0]))
        fresh = self.demand.want(key, self.clock())
        if fresh:
            self._subscribe_later(key)
        return fresh

    def _subscribe_later(self, key: tuple[int, str]) -> None:
        with self._cond:
            if key not in self._subscribed:
                # A frame kept from an earlier subscription is stale by now: wait for a new one.
                self._frames.pop(key, None)
                self._pending.pop(key, None)
        self._ctrl.put((b"want", _key_bytes(key)))

    def release(self, cam: int, encoding: str | None = None) -> None:
        """Unsubscribe `cam`'s frames now (on demand), unless a `watching` block holds them."""
        if not self.on_demand or self._closed:
            return
        key = (int(cam), topics.check_encoding(encoding or self.encodings[0]))
        if self.demand.release(key, self.clock()):
            self._ctrl.put((b"sweep", b""))

    @contextlib.contextmanager
    def watching(self, cam: int, encoding: str | None = None) -> Iterator[Subscriber]:
        """Keep `cam`'s frames subscribed for the block (on demand); `idle_s` after it ends,
        if nobody else wants them, they are unsubscribed."""
        self._check_open()
        key = (int(cam), topics.check_encoding(encoding or self.encodings[0]))
        if not self.on_demand:
            yield self
            return
        if self.demand.hold(key, self.clock()):
            self._subscribe_later(key)
        try:
            yield self
        finally:
            self.demand.unhold(key, self.clock())

    def subscribed(self) -> set[tuple[int, str]]:
        """The (camera, encoding) frame topics subscribed right now."""
        with self._cond:
            return set(self._subscribed)

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

    def synced(
        self,
        cams: Iterable[int],
        *,
        tolerance_ms: float | None = None,
        timeout: float = 2.0,
        newer_than: FrameSet | None = None,
        max_age_ms: float | None = None,
    ) -> FrameSet:
        """The newest set of `cams`, one frame each, captured within `tolerance_ms` of each other
        on this receiver's clock (default: half the slowest camera's frame interval).

        `newer_than` (an earlier set) waits for a set whose every frame is newer; frames older
        than `max_age_ms` (default 1 s, or three of the slowest intervals) never join. Raises
        `SyncTimeout` (a `FrameTimeout`) naming the camera that was missing or too far apart,
        `UnknownCamera` for a camera outside `cameras`. See `protocol/sync.py`.
        """
        cams = list(cams)
        return self._synced(cams).wait(cams, self.encodings[0], tolerance_ms=tolerance_ms,
                                       timeout=timeout, newer_than=newer_than, max_age_ms=max_age_ms)

    def synced_sets(self, cams: Iterable[int], *, tolerance_ms: float | None = None,
                    timeout: float = 2.0, max_age_ms: float | None = None) -> Iterator[FrameSet]:
        """Every new set of `cams` as it forms (no frame used twice), until closed; as `synced`."""
        cams = list(cams)
        return self._synced(cams).sets(cams, self.encodings[0], tolerance_ms=tolerance_ms,
                                       timeout=timeout, max_age_ms=max_age_ms)

    def _synced(self, cams: list[int]) -> FrameSync:
        """The per-camera histories, started on first use with the newest frames held now."""
        unknown = [c for c in cams if self.cameras is not None and int(c) not in self.cameras]
        if unknown:
            raise UnknownCamera(unknown[0])
        with self._cond:
            sync = getattr(self, "_frame_sync", None)
            if sync is None:
                sync = self._frame_sync = FrameSync(
                    self._cond, self.clock, closed=lambda: self._closed,
                    nominal_fps=lambda cam: _announced_fps(self._metas.get(cam)))
                for frame in self._frames.values():
                    sync.add_locked(frame)
                self._listeners.append(sync.add)
        return sync

    def meta(self, cam: int) -> wire.Meta | None:
        """The newest heartbeat of `cam`, or None if none arrived yet."""
        with self._cond:
            return self._metas.get(int(cam))

    def metas(self) -> dict[int, wire.Meta]:
        """The newest heartbeat of every camera seen so far."""
        with self._cond:
            return dict(self._metas)

    def message(self, topic: bytes) -> wire.Message | None:
        """The newest non-frame message on exactly `topic` (scan, status, world)."""
        with self._cond:
            return self._others.get(topic)

    def messages(self, prefix: bytes) -> dict[bytes, wire.Message]:
        """The newest non-frame message of every topic under `prefix`."""
        with self._cond:
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
        self._check_open()
        if not self._ctrl.put((command, arg)):
            raise CamfabricError("subscriber's control queue is full; is its thread stuck?")

    # -- the receive thread ------------------------------------------------------------------
    def _initial_topics(self) -> list[bytes]:
        wanted = list(self._extra)
        if self.cameras is None or self.cameras:  # cameras=(): only the extra topics
            wanted.append(topics.META.encode())
        if self.cameras is not None and not self.on_demand:
            for cam in sorted(self.cameras):
                for enc in self.encodings:
                    wanted.append(topics.frame(cam, enc))
                    self._subscribed.add((cam, enc))
        return wanted

    def _connect(self, sub: zmq.Socket) -> None:
        for endpoint in self.endpoints:
            keys = self.curve.get(endpoint) if isinstance(self.curve, Mapping) else self.curve
            if keys is not None:
                secure_client(sub, keys, self.log, endpoint, watch=False)  # see _on_link_event
            sub.connect(endpoint)

    def _on_link_event(self, endpoint: str, event: int, value: int) -> None:
        """Why a CURVE handshake failed, logged once per endpoint (again after a success)."""
        if not event & HANDSHAKE_EVENTS:
            return
        keys = self.curve.get(endpoint) if isinstance(self.curve, Mapping) else self.curve
        if keys is None:
            return
        reason = handshake_failure(event, value, keys)
        if reason is None:
            if self._failures.recovered(f"handshake {endpoint}"):
                self.log.info("CURVE handshake with %s succeeded", endpoint)
        else:
            self._failures.warning(f"handshake {endpoint}", "CURVE handshake with %s failed: %s",
                                   endpoint, reason)

    def _run(self, ready: Ready) -> None:
        sub = None
        try:
            sub = self.context.socket(zmq.SUB)
            sub.linger = 0
            sub.rcvhwm = self.rcvhwm
            configure_link(sub)  # liveness, connect timeout, reconnect within a second
            for prefix in self._initial_topics():
                sub.subscribe(prefix)
            self.reachability.attach(sub)
            self._connect(sub)
        except BaseException:  # start_thread raises it in start()
            self.reachability.close()
            if sub is not None:
                sub.close(linger=0)
            raise
        ready.set()
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self._ctrl, zmq.POLLIN)
        poller.register(self.reachability.socket, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(SWEEP_INTERVAL_MS if self.on_demand else None))
                if (self._ctrl in events or len(self._ctrl)) and not self._commands(sub):
                    return
                if sub in events:
                    self._drain(sub)
                if self.reachability.socket in events:
                    self.reachability.handle()
                if self.on_demand:
                    self._sweep(sub)
        finally:
            self.reachability.close()
            sub.close(linger=0)
            self._ctrl.close()

    def _commands(self, sub: zmq.Socket) -> bool:
        for command, arg in self._ctrl.take(256):
            if command == b"stop":
                return False
            if command == b"sub":
                sub.subscribe(arg)
            elif command == b"unsub":
                sub.unsubscribe(arg)
            elif command == b"want":
                self._subscribe_frames(sub, _key_of(arg))
        return True

    def _subscribe_frames(self, sub: zmq.Socket, key: tuple[int, str]) -> None:
        with self._cond:
            if key in self._subscribed:
                return
            self._subscribed.add(key)
        sub.subscribe(topics.frame(*key))

    def _sweep(self, sub: zmq.Socket) -> None:
        with self._cond:  # one step, so a concurrent want() sees the key either kept or gone
            idle = self.demand.idle(self.clock())
            for key in idle:
                self._subscribed.discard(key)
        for key in idle:
            sub.unsubscribe(topics.frame(*key))

    def _drain(self, sub: zmq.Socket) -> None:
        for _ in range(256):  # bounded, so a stop command is never starved
            try:
                parts = sub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._heard += 1
            # Nothing in one message may stop this thread: a format error is counted and
            # logged once per kind; anything else (a bug met by odd input) the same way.
            try:
                msg = wire.decode(parts, t_receive_ns=self.clock())
                if isinstance(msg, wire.Frame | wire.Meta) and msg.node:
                    delay = self.delay.observe(msg.node, self.flight_clock(), msg.t_publish_ns)
                    if delay and isinstance(msg, wire.Frame):
                        msg = dataclasses.replace(msg, t_delay_ns=delay)
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
                if (self.cameras is None and not self.on_demand
                        and all((msg.cam, enc) not in self._subscribed for enc in self.encodings)):
                    for enc in self.encodings:
                        self._subscribed.add((msg.cam, enc))
                        sub.subscribe(topics.frame(msg.cam, enc))
            else:
                if msg.topic not in self._others and len(self._others) >= MAX_CAMERAS:
                    return
                self._others[msg.topic] = msg
            self._received += 1
            self._cond.notify_all()
        for listener in self._listeners:
            try:
                listener(msg)
            except Exception as exc:
                self._failures.error(f"listener.{type(exc).__name__}", "subscriber listener "
                                     "failed on %r (logged once per kind)", msg.topic, exc_info=exc)

    def _count_gap(self, prev: wire.Frame, frame: wire.Frame) -> None:
        """Count the frames lost between `prev` and `frame` (lock held). `seq` is a header
        field: a jump no camera could make between the two frames (a forged or corrupt
        header) is no evidence of loss, and is logged once instead of counted."""
        gap = frame.seq - prev.seq - 1
        if gap <= _plausible_gap(prev, frame):
            self._dropped += gap
            return
        self._failures.warning("seq.jump", "camera %d: sequence number jumped from %d to %d "
                               "faster than any camera captures; not counted as drops (a forged "
                               "or corrupt header?); further ones are not logged", frame.cam,
                               prev.seq, frame.seq)

    def _accept_frame(self, frame: wire.Frame) -> bool:
        if self.cameras is not None and frame.cam not in self.cameras:
            return False
        key = (frame.cam, frame.encoding)
        if self.on_demand and key not in self._subscribed:
            return False  # in flight when it was unsubscribed
        prev = self._frames.get(key)
        if prev is not None and _same(prev, frame):
            self._duplicates += 1  # a last-value re-send meant for a late joiner
            return False
        if prev is not None and prev.node == frame.node and frame.seq > prev.seq + 1:
            self._count_gap(prev, frame)
        self._frames[key] = frame
        if len(self._framed) < MAX_CAMERAS:
            self._framed.add(frame.cam)
        if key in self._pending:
            self._skipped += 1
            del self._pending[key]
        self._pending[key] = frame
        return True


def _plausible_gap(prev: wire.Frame, frame: wire.Frame) -> int:
    """The most frames a camera can have lost between two of its frames: as many as the
    fastest camera (wire.MAX_FPS) captures between their captures, as this receiver dates
    them (`captured_locally_ns`: arrival, less the waits each frame reports and its measured
    delay in flight — so frames bunched up by a queue or a partition keep their true spacing,
    and a header cannot stretch it beyond what arrived), plus GAP_SLACK."""
    elapsed_ns = max(0, captured_locally_ns(frame) - captured_locally_ns(prev))
    return GAP_SLACK + elapsed_ns * wire.MAX_FPS // 1_000_000_000


def _announced_fps(meta: wire.Meta | None) -> float | None:
    health = meta.health if meta is not None else None
    return health.get("fps") if isinstance(health, dict) else None


def _same(a: wire.Frame, b: wire.Frame) -> bool:
    return a.seq == b.seq and a.t_capture_ns == b.t_capture_ns and a.node == b.node


def _key_bytes(key: tuple[int, str]) -> bytes:
    return f"{key[0]}/{key[1]}".encode("ascii")


def _key_of(raw: bytes) -> tuple[int, str]:
    cam, _, enc = raw.decode("ascii").partition("/")
    return int(cam), enc
