"""The sending side of an XPUB socket: frames may be lost, heartbeats may not.

An XPUB drops a message for a subscriber whose send queue (`sndhwm`, a handful of messages on
purpose) is full, without an error. That is right for frames — a slow subscriber must lose old
frames, never queue them — and wrong for everything else: a node with 64 cameras sends 64
heartbeats (`meta/`) at once, and all but the first few vanished, every second, so most cameras
never showed as connected.

`Outlet` sends frames (`frame/...`) as before, lossy. Every other message (heartbeats, scans,
status, the world model) is sent with `ZMQ_XPUB_NODROP`: libzmq refuses it (EAGAIN) unless
every matching subscriber has room, so it waits here — the newest per topic, in the order
given — and is sent again at the next `flush()` (the owner loop polls with `timeout_ms()`).
A subscriber that reads nothing at all must not hold the others' heartbeats back: when the
message at the head of the queue has not gone out for `hold_s`, it is sent lossy after all.
(The clock starts when the head first fails, so a queue that moves never times out; timing
from arrival gave up on a long burst while a reader's pipe was merely full for a moment.)
That subscriber loses the message, and libzmq leaves its full pipe out of the match until it
reads again, so the messages behind pass. libzmq does the same to any pipe that was full at
that instant, and a NODROP send skips such a pipe without a word until its reader catches up:
after a lossy send the rest waits `settle_s`, time for every reader that reads to be matched
again. At most `max_held` topics wait; a further one is sent lossy at once.

The socket belongs to the caller's thread; so does the Outlet.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import zmq

from . import topics

HOLD_S = 0.5
SETTLE_S = 0.05  # after a lossy send of a held message: readers' full pipes become active again
MAX_HELD = 4096
RETRY_MS = 2  # how soon a held message is tried again (the subscriber's I/O thread drains fast)
_FRAME = topics.FRAME.encode()


def topic_of(parts: list[Any]) -> bytes:
    """The topic of a multipart message given as bytes or zmq.Frame parts."""
    first = parts[0]
    return first.bytes if isinstance(first, zmq.Frame) else bytes(first)


class Outlet:
    """Sends multipart messages on an XPUB: frames lossy, the rest held until there is room."""

    def __init__(self, sock: zmq.Socket, *, hold_s: float = HOLD_S, settle_s: float = SETTLE_S,
                 max_held: int = MAX_HELD, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.sock = sock
        self.hold_ns = int(hold_s * 1e9)
        self.settle_ns = int(settle_s * 1e9)
        self._settled_at = 0
        self._blocked_since: int | None = None  # when the head of the queue first failed
        self.max_held = max_held
        self.clock = clock
        self._held: OrderedDict[bytes, list[Any]] = OrderedDict()
        self._nodrop = False
        self.sent = 0
        self.dropped = 0  # refused by a full socket (frames), or given up on after hold_s
        self.held_too_long = 0

    def send(self, parts: list[Any]) -> bool:
        """Send `parts` now (a frame), or once every subscriber has room (anything else).

        False when a frame met a full socket; True otherwise (a held message counts as sent
        when it is)."""
        topic = topic_of(parts)
        if topic.startswith(_FRAME):
            return self._try(parts, nodrop=False)
        if topic not in self._held and len(self._held) >= self.max_held:
            self._try(parts, nodrop=False)
            return True
        self._held[topic] = parts  # a newer one replaces an older one where it waits
        self.flush()
        return True

    def flush(self) -> None:
        """Send what waits, in order, until a subscriber has no room."""
        now = self.clock()
        if now < self._settled_at:
            return
        while self._held:
            topic, parts = next(iter(self._held.items()))
            if not self._try(parts, nodrop=True):
                if self._blocked_since is None:
                    self._blocked_since = now
                if now - self._blocked_since < self.hold_ns:
                    return
                self.held_too_long += 1
                self._try(parts, nodrop=False)
                del self._held[topic]
                self._blocked_since = None
                self._settled_at = now + self.settle_ns
                return
            self._blocked_since = None
            del self._held[topic]

    @property
    def held(self) -> int:
        """How many messages wait for room."""
        return len(self._held)

    def timeout_ms(self, idle_ms: int) -> int:
        """How long the owner loop may poll before calling `flush()` again."""
        return min(idle_ms, RETRY_MS) if self._held else idle_ms

    def _try(self, parts: list[Any], *, nodrop: bool) -> bool:
        if nodrop != self._nodrop:
            self.sock.setsockopt(zmq.XPUB_NODROP, int(nodrop))
            self._nodrop = nodrop
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if not nodrop:
                self.dropped += 1
            return False
        self.sent += 1
        return True


__all__ = ["Outlet", "topic_of"]
