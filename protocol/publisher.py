"""The publishing end of the fabric: an XPUB socket that knows who is listening.

`Publisher` binds an XPUB socket owned by one background thread. Any thread may call
`publish(msg)`: the message crosses to the owner over an inproc PUSH socket of that thread,
so capture threads never share a socket. The owner also reads subscription events, which
gives two things the fabric relies on:

- `wants(topic)` — whether anyone is subscribed to a topic right now, so a node encodes JPEG
  or produces raw frames only while someone asks for them;
- a last-value cache — when a subscription arrives, the newest message of every topic it
  matches is sent again at once, so a late joiner need not wait for the next capture.
  (The re-send reaches every subscriber of that topic; receivers drop the duplicate.)

Send high-water marks are small: a slow subscriber loses old frames, never builds a queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..logonce import LogOnce
from . import topics, wire
from .errors import CamfabricError
from .link import MAX_SUBSCRIPTION, configure_link
from .security import CurveServer, is_loopback_endpoint, secure_server

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5550"
# Distinct subscriptions to topics this publisher has not sent (nor announced a camera for)
# that it keeps track of; beyond this, such subscriptions are logged and ignored. XPUB does
# not say which peer sent a subscription, so the cap is per publisher.
MAX_SUBSCRIPTIONS = 1024
# Subscription events handled per turn of the owner loop before it forwards frames again.
SUBSCRIPTION_BATCH = 256


class Publisher:
    """Publishes wire messages on one XPUB endpoint; thread-safe `publish`, subscription-aware."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        context: zmq.Context | None = None,
        curve: CurveServer | None = None,
        insecure: bool = False,
        sndhwm: int = 4,
        on_subscribe: Callable[[bytes], None] | None = None,
        log: logging.Logger | None = None,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.log = log or logging.getLogger(__name__)
        self.requested_endpoint = endpoint
        self.endpoint = endpoint
        self.curve = curve
        self.insecure = insecure
        self.sndhwm = sndhwm
        self.on_subscribe = on_subscribe
        self.max_subscriptions = max_subscriptions
        # prefix -> number of subscribers; read without a lock by wants() (dict lookups are
        # atomic), written only by the owner thread.
        self._subscriptions: dict[bytes, int] = {}
        self._unknown: set[bytes] = set()  # those beyond what this publisher sends (capped)
        self.ignored_subscriptions = 0
        self._failures = LogOnce(self.log)
        self._active_changed = threading.Condition()
        self._cache: dict[bytes, list[Any]] = {}
        self._cache_lock = threading.Lock()
        self._inbox = f"inproc://camfabric-publisher-{id(self):x}"
        self._local = threading.local()
        self._pushers: list[zmq.Socket] = []
        self._pushers_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._start_error: BaseException | None = None
        self.sent = 0
        self.dropped = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> Publisher:
        """Bind and start the owner thread; raises what binding raised (e.g. address in use)."""
        if not is_loopback_endpoint(self.requested_endpoint) and not (self.curve or self.insecure):
            raise CamfabricError(
                f"refusing to publish on non-loopback {self.requested_endpoint} without CURVE keys; "
                "configure curve keys, or set insecure = true to accept unencrypted traffic"
            )
        self._thread = threading.Thread(target=self._run, name="camfabric-publisher", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise CamfabricError(f"publisher on {self.requested_endpoint} did not start in {timeout} s")
        if isinstance(self._start_error, zmq.ZMQError):
            raise CamfabricError(f"cannot publish on {self.requested_endpoint}: {self._start_error}"
                                 ) from self._start_error
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the owner thread and close every socket with linger 0."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._pushers_lock:
            for sock in self._pushers:
                sock.close(linger=0)
            self._pushers.clear()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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

    @property
    def subscriptions(self) -> frozenset[bytes]:
        """The prefixes someone is subscribed to now."""
        return frozenset(self._subscriptions)

    def publish(self, msg: wire.Message) -> bool:
        """Queue `msg` for sending; False (and counted) if the owner thread is backed up."""
        return self.publish_parts(wire.encode(msg))

    def publish_parts(self, parts: list[Any], *, cache: bool = True) -> bool:
        """Send already-encoded parts; `cache=False` keeps them out of the last-value cache
        (tests use that to put malformed messages on the wire)."""
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self.context.socket(zmq.PUSH)
            sock.linger = 0
            sock.sndhwm = 8
            sock.connect(self._inbox)
            self._local.push = sock
            with self._pushers_lock:
                self._pushers.append(sock)
        try:
            sock.send_multipart([b"c" if cache else b"-", *parts], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.dropped += 1
            return False

    def forget(self, prefix: bytes) -> None:
        """Drop cached last values under `prefix` (e.g. a camera removed from the node)."""
        with self._cache_lock:
            for topic in [t for t in self._cache if t.startswith(prefix)]:
                del self._cache[topic]

    # -- the owner thread --------------------------------------------------------------------
    def _run(self) -> None:
        xpub = inbox = auth = None
        try:
            xpub = self.context.socket(zmq.XPUB)
            xpub.linger = 0
            xpub.sndhwm = self.sndhwm
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
            configure_link(xpub, max_message=MAX_SUBSCRIPTION)
            if self.curve is not None:
                auth = secure_server(xpub, self.curve, self.context, self.log)
            xpub.bind(self.requested_endpoint)
            self.endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            inbox = self.context.socket(zmq.PULL)
            inbox.linger = 0
            inbox.rcvhwm = 16
            inbox.bind(self._inbox)
        except Exception as exc:  # handed to start(), which raises it in the caller
            self._start_error = exc
            for sock in (xpub, inbox):
                if sock is not None:
                    sock.close(linger=0)
            if auth is not None:
                auth.stop()
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(xpub, zmq.POLLIN)
        poller.register(inbox, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(100))
                if xpub in events:
                    self._on_subscription_events(xpub)
                if inbox in events:
                    self._forward(inbox, xpub)
                if auth is not None:
                    auth.check(xpub, self.endpoint)  # follows authorized_keys_dir
        finally:
            xpub.close(linger=0)
            inbox.close(linger=0)
            if auth is not None:
                auth.stop()

    def _forward(self, inbox: zmq.Socket, xpub: zmq.Socket) -> None:
        for _ in range(64):  # bounded, so subscription events are never starved
            try:
                flag, *parts = inbox.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if flag.bytes == b"c":
                with self._cache_lock:
                    self._cache[parts[0].bytes] = parts
            self._send(xpub, parts)

    def _send(self, xpub: zmq.Socket, parts: list[Any]) -> None:
        try:
            xpub.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

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
            elif count > 0:
                if count == 1:
                    del self._subscriptions[prefix]
                    self._unknown.discard(prefix)
                    changed = True
                else:
                    self._subscriptions[prefix] = count - 1
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
        with self._cache_lock:
            cached = [parts for topic, parts in self._cache.items() if topic.startswith(prefix)]
        for parts in cached:
            self._send(xpub, parts)

