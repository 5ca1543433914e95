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
A subscriber that reads nothing at all must not hold the others' heartbeats back: a message
held longer than `hold_s` is sent lossy after all (that subscriber loses it; libzmq then leaves
its full pipe out of the match until it reads again, so the messages behind it pass at once).
At most `max_held` topics wait; a further one is sent lossy at once.

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
MAX_HELD = 4096
RETRY_MS = 2  # how soon a held message is tried again (the subscriber's I/O thread drains fast)
_FRAME = topics.FRAME.encode()


def topic_of(parts: list[Any]) -> bytes:
    """The topic of a multipart message given as bytes or zmq.Frame parts."""
    first = parts[0]
    return first.bytes if isinstance(first, zmq.Frame) else bytes(first)


class Outlet:
    """Sends multipart messages on an XPUB: frames lossy, the rest held until there is room."""

    def __init__(self, sock: zmq.Socket, *, hold_s: float = HOLD_S, max_held: int = MAX_HELD,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.sock = sock
        self.hold_ns = int(hold_s * 1e9)
        self.max_held = max_held
        self.clock = clock
        self._held: OrderedDict[bytes, tuple[list[Any], int]] = OrderedDict()
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
        if topic in self._held:  # a newer one replaces it where it waits
            self._held[topic] = (parts, self._held[topic][1])
        elif len(self._held) >= self.max_held:
            self._try(parts, nodrop=False)
            return True
        else:
            self._held[topic] = (parts, self.clock())
        self.flush()
        return True

    def flush(self) -> None:
        """Send what waits, in order, until a subscriber has no room."""
        now = self.clock()
        while self._held:
            topic, (parts, since) = next(iter(self._held.items()))
            if not self._try(parts, nodrop=True):
                if now - since < self.hold_ns:
                    return
                self.held_too_long += 1
                self._try(parts, nodrop=False)
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
