"""The publishing end of the fabric: an XPUB socket that knows who is listening.

`Publisher` binds an XPUB socket owned by one background thread. Any thread may call
`publish(msg)`: the message goes into a bounded mailbox the owner drains, so no other thread
ever touches a socket and nothing queues without bound. The owner also reads subscription
events, which gives two things the fabric relies on:

- `wants(topic)` — whether anyone is subscribed to a topic right now, so a node encodes JPEG
  or produces raw frames only while someone asks for them;
- a last-value cache — when a subscription arrives, the newest message of every topic it
  matches is sent again at once, so a late joiner need not wait for the next capture. A
  re-sent frame (or world model) is re-stamped: its `t_publish_ns` grows by the time it waited
  in the cache, so every age computed from it stays true. A cached *frame* is re-sent only while it is fresh
  (`replay_max_age_s`, a few frame intervals); an older one is dropped from the cache and the
  late joiner gets the next capture instead. (The re-send reaches every subscriber of that
  topic; receivers drop the duplicate.)

Drops, and where they are counted: `dropped` counts messages this publisher refused because
its owner thread was behind (the mailbox was full). A subscriber whose own queue is full
(send high-water mark, small on purpose: a slow subscriber loses old frames, never builds a
queue) loses messages inside ZeroMQ without the publisher being told — XPUB drops them per
subscriber without an error — so those are counted on the receiving side, as sequence gaps
(`Subscriber.stats.dropped`). Only frames are lost that way: heartbeats, scans, status and
the world model wait in the owner thread until every subscriber has room (`outlet.Outlet`), so
a node's heartbeats of 64 cameras, sent together, all arrive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from ..runtime.logonce import LogOnce
from ..runtime.threads import Background, Ready, start_thread
from . import topics, wire
from .endpoint import check_endpoint
from .errors import CamfabricError
from .link import MAX_SUBSCRIPTION, configure_link
from .mailbox import Mailbox
from .outlet import Outlet
from .security import CurveServer, is_loopback_endpoint, secure_server

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5550"
DEFAULT_FRAME_REPLAY_S = 0.5  # a cached frame older than this is never re-sent (see Publisher)
MAILBOX_CAPACITY = 64
MAX_CACHED_TOPICS = 1024
BATCH = 64  # messages forwarded per turn, so subscription events are never starved
# Distinct subscriptions to topics this publisher has not sent (nor announced a camera for)
# that it keeps track of; beyond this, such subscriptions are logged and ignored. XPUB does
# not say which peer sent a subscription, so the cap is per publisher.
MAX_SUBSCRIPTIONS = 1024
# Subscription events handled per turn of the owner loop before it forwards frames again.
SUBSCRIPTION_BATCH = 256


@dataclass(slots=True)
class _Cached:
    """A last value: the parts as sent, and when (this host's monotonic clock) they were."""

    parts: list[Any]
    t_sent_mono_ns: int


class Publisher(Background):
    """Publishes wire messages on one XPUB endpoint; thread-safe `publish`, subscription-aware.

    `replay_max_age_s` bounds how old (since capture) a cached frame may be and still be
    re-sent to a late joiner: a number for every frame topic, or a function of the topic (a
    node gives each camera a few of its frame intervals). `clock` is the monotonic clock
    (nanoseconds) the time a message waits in the cache is measured on.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        context: zmq.Context | None = None,
        curve: CurveServer | None = None,
        insecure: bool = False,
        sndhwm: int = 4,
        on_subscribe: Callable[[bytes], None] | None = None,
        replay_max_age_s: float | Callable[[bytes], float] = DEFAULT_FRAME_REPLAY_S,
        clock: Callable[[], int] = time.monotonic_ns,
        log: logging.Logger | None = None,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.log = log or logging.getLogger(__name__)
        self.requested_endpoint = check_endpoint(endpoint, bind=True)
        self.endpoint = endpoint
        self.curve = curve
        self.insecure = insecure
        self.sndhwm = sndhwm
        self.on_subscribe = on_subscribe
        self.replay_max_age_s = replay_max_age_s
        self.clock = clock
        self.max_subscriptions = max_subscriptions
        # prefix -> subscriptions received since it was first subscribed (present while anyone
        # is subscribed); read without a lock by wants() (dict lookups are atomic), written
        # only by the owner thread.
        self._subscriptions: dict[bytes, int] = {}
        self._unknown: set[bytes] = set()  # those beyond what this publisher sends (capped)
        self.ignored_subscriptions = 0
        self._failures = LogOnce(self.log)
        self._active_changed = threading.Condition()
        self._cache: dict[bytes, _Cached] = {}
        self._cache_lock = threading.Lock()
        self._inbox: Mailbox[tuple[bool, list[Any]]] = Mailbox(MAILBOX_CAPACITY)
        self._thread: threading.Thread | None = None
        self._outlet: Outlet | None = None  # made on the owner thread, with its socket
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self.sent = 0
        self.dropped = 0
        self.replayed = 0
        self.replays_refused = 0  # cached frames too old to re-send

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> Publisher:
        """Bind and start the owner thread; raises what binding raised (e.g. address in use)."""
        if not is_loopback_endpoint(self.requested_endpoint) and not (self.curve or self.insecure):
            raise CamfabricError(
                f"refusing to publish on non-loopback {self.requested_endpoint} without CURVE keys; "
                "configure curve keys, or set insecure = true to accept unencrypted traffic"
            )
        try:
            self._thread = start_thread(self._run, name="camfabric-publisher", timeout=timeout)
        except zmq.ZMQError as exc:
            raise CamfabricError(f"cannot publish on {self.requested_endpoint}: {exc}") from exc
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the owner thread, which closes its sockets with linger 0."""
        self._stopping.set()
        self._inbox.wake()  # out of its poll at once, not at the next timeout
        if self._thread is not None:
            self._thread.join(timeout)

    # -- what callers use --------------------------------------------------------------------
    def wants(self, topic: bytes) -> bool:
        """True when at least one subscriber's prefix matches `topic`.

        One dict lookup per prefix of `topic` (a topic is a few dozen bytes), however many
        subscriptions there are."""
        subs = self._subscriptions
        return any(topic[:i] in subs for i in range(len(topic) + 1))

    def wait_for_subscriber(self, topic: bytes, timeout: float = 5.0) -> bool:
        """Block until someone subscribes to a prefix of `topic`; True if they did in time."""
        with self._active_changed:
            return self._active_changed.wait_for(lambda: self.wants(topic), timeout)

    def wait_for_no_subscriber(self, topic: bytes, timeout: float = 5.0) -> bool:
        """Block until nobody is subscribed to a prefix of `topic`; True if so in time."""
        with self._active_changed:
            return self._active_changed.wait_for(lambda: not self.wants(topic), timeout)

    @property
    def subscriptions(self) -> frozenset[bytes]:
        """The prefixes someone is subscribed to now."""
        return frozenset(self._subscriptions)

    def publish(self, msg: wire.Message) -> bool:
        """Queue `msg` for sending; False (and counted in `dropped`) if the owner is backed up."""
        return self.publish_parts(wire.encode(msg))

    def publish_parts(self, parts: list[Any], *, cache: bool = True) -> bool:
        """Send already-encoded parts; `cache=False` keeps them out of the last-value cache
        (tests use that to put malformed messages on the wire)."""
        if self._inbox.put((cache, list(parts))):
            return True
        with self._count_lock:
            self.dropped += 1
        return False

    def forget(self, prefix: bytes) -> None:
        """Drop cached last values under `prefix` (e.g. a camera removed from the node)."""
        with self._cache_lock:
            for topic in [t for t in self._cache if t.startswith(prefix)]:
                del self._cache[topic]

    # -- the owner thread --------------------------------------------------------------------
    def _run(self, ready: Ready) -> None:
        xpub = auth = None
        try:
            xpub = self.context.socket(zmq.XPUB)
            xpub.linger = 0
            xpub.sndhwm = self.sndhwm
            # Every subscription (each one is answered from the cache), but an unsubscription
            # only when a topic's last subscriber left: libzmq's SUB sends each subscribe yet
            # only its last unsubscribe, so counting messages would never come back to zero.
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            configure_link(xpub, max_message=MAX_SUBSCRIPTION)
            if self.curve is not None:
                auth = secure_server(xpub, self.curve, self.context, self.log)
            xpub.bind(self.requested_endpoint)
            self.endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:  # start_thread raises it in start()
            if xpub is not None:
                xpub.close(linger=0)
            if auth is not None:
                auth.stop()
            self._inbox.close()
            raise
        self._outlet = Outlet(xpub)
        ready.set()
        poller = zmq.Poller()
        poller.register(xpub, zmq.POLLIN)
        poller.register(self._inbox, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(self._outlet.timeout_ms(100)))
                self._outlet.flush()  # heartbeats that waited for a subscriber's room
                if xpub in events:
                    self._on_subscription_events(xpub)
                if self._inbox in events or len(self._inbox):
                    self._forward(xpub)  # also clears a wake-up without items
                if auth is not None:
                    auth.check(xpub, self.endpoint)  # follows authorized_keys_dir
        finally:
            self._inbox.close()
            xpub.close(linger=0)
            if auth is not None:
                auth.stop()

    def _forward(self, xpub: zmq.Socket) -> None:
        now = self.clock()
        for cache, parts in self._inbox.take(BATCH):
            if cache:
                self._remember(parts, now)
            self._send(xpub, parts)

    def _remember(self, parts: list[Any], now: int) -> None:
        topic = parts[0] if isinstance(parts[0], bytes) else bytes(parts[0])
        with self._cache_lock:
            if topic not in self._cache and len(self._cache) >= MAX_CACHED_TOPICS:
                self._failures.warning("cache.full", "last-value cache holds %d topics; %r and later "
                                       "new topics are not cached for late joiners",
                                       MAX_CACHED_TOPICS, topic)
                return
            self._cache[topic] = _Cached(parts, now)

    def _send(self, xpub: zmq.Socket, parts: list[Any]) -> bool:
        # Frames are lossy per subscriber (XPUB drops them without telling: counted by the
        # receivers as sequence gaps); heartbeats, scans and status wait for room (outlet.py).
        if not self._outlet.send(parts):
            with self._count_lock:
                self.dropped += 1
            return False
        with self._count_lock:
            self.sent += 1
        return True

    def _on_subscription_events(self, xpub: zmq.Socket) -> None:
        """Apply up to SUBSCRIPTION_BATCH events, then replay and notify once per new prefix.

        Bounded per turn so frames keep flowing during a flood of subscriptions; each event
        costs a dict update, and a prefix subscribed many times in one batch is replayed once.
        """
        fresh: list[bytes] = []
        changed = False
        for _ in range(SUBSCRIPTION_BATCH):
            try:
                event = xpub.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if not event or event[0] not in (0, 1):
                continue
            prefix = event[1:]
            count = self._subscriptions.get(prefix, 0)
            if event[0] == 1:
                if count == 0:
                    if not self._admit(prefix):
                        continue
                    changed = True
                if prefix not in fresh:
                    fresh.append(prefix)
                self._subscriptions[prefix] = count + 1
            elif count > 0:  # the XPUB says so only when the topic's last subscriber left
                del self._subscriptions[prefix]
                self._unknown.discard(prefix)
                changed = True
        if changed:
            with self._active_changed:
                self._active_changed.notify_all()
        for prefix in fresh:
            self._replay(xpub, prefix)
            if self.on_subscribe is not None:
                try:
                    self.on_subscribe(prefix)
                except Exception as exc:
                    self._failures.error("on_subscribe", "on_subscribe handler failed for %r",
                                         prefix, exc_info=exc)

    def _known(self, prefix: bytes) -> bool:
        """True when `prefix` matches a topic this publisher sent, or a frame topic of a
        camera whose heartbeat it sent: those never count against the cap."""
        with self._cache_lock:
            if any(topic.startswith(prefix) for topic in self._cache):
                return True
        if prefix.startswith(topics.FRAME.encode()):
            cam = prefix[len(topics.FRAME):].split(b"/", 1)[0]
            return cam.isdigit() and topics.meta(int(cam)) in self._cache
        return False

    def _admit(self, prefix: bytes) -> bool:
        if self._known(prefix):
            return True
        if len(self._unknown) >= self.max_subscriptions:
            self.ignored_subscriptions += 1
            self._failures.warning(
                "subscriptions.cap", "publisher on %s: over %d distinct subscriptions to topics "
                "it does not send; ignoring further ones (a misbehaving client?)",
                self.endpoint, self.max_subscriptions)
            return False
        self._unknown.add(prefix)
        return True

    def _replay(self, xpub: zmq.Socket, prefix: bytes) -> None:
        now = self.clock()
        with self._cache_lock:
            cached = [(topic, entry) for topic, entry in self._cache.items()
                      if topic.startswith(prefix)]
        for topic, entry in cached:
            parts = self._restamped(topic, entry, now)
            if parts is None:
                with self._cache_lock:
                    if self._cache.get(topic) is entry:
                        del self._cache[topic]  # too old to ever be replayed again
                with self._count_lock:
                    self.replays_refused += 1
                continue
            if self._send(xpub, parts):
                with self._count_lock:
                    self.replayed += 1

    def _max_age_ns(self, topic: bytes) -> int:
        bound = self.replay_max_age_s
        seconds = bound(topic) if callable(bound) else bound
        return int(seconds * 1e9)

    def _restamped(self, topic: bytes, entry: _Cached, now: int) -> list[Any] | None:
        """The cached parts with `t_publish_ns` moved on by the time they waited here; None for a
        frame that is no longer fresh enough to re-send.

        Only messages whose age receivers measure from `t_publish_ns` (frames: minus
        `t_capture_ns`; the world model: minus its `updated`) are re-stamped; a heartbeat, scan
        or status keeps the stamp of when its content was current."""
        if not (topic.startswith(topics.FRAME.encode()) or topic == topics.world()):
            return entry.parts
        waited = max(0, now - entry.t_sent_mono_ns)
        raw = entry.parts[1]
        try:
            header = msgpack.unpackb(raw if isinstance(raw, bytes) else bytes(raw), raw=False,
                                     strict_map_key=False)
            t_pub = header["t_publish_ns"] + waited
        except Exception:  # not ours to judge (a test's malformed parts): re-send as it was
            return entry.parts
        if topic.startswith(topics.FRAME.encode()):
            t_capture = header.get("t_capture_ns", t_pub)
            if t_pub - t_capture > self._max_age_ns(topic):
                return None
        header["t_publish_ns"] = t_pub
        return [entry.parts[0], msgpack.packb(header, use_bin_type=True), *entry.parts[2:]]
