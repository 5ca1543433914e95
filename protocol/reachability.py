"""Reachability: what a subscriber's socket knows about each endpoint it connects to.

When nothing arrives, "no frame within 2 s" helps nobody: was nothing listening, did
something listen that does not speak ZeroMQ (the gateway's HTTP port given by mistake), or
did the node refuse our CURVE key? A ZeroMQ socket monitor reports exactly that per endpoint
— TCP connected, handshake succeeded or failed and why — and `describe()` turns it into a
sentence that says what to fix. The monitor's inproc address comes from a uuid (never from
`id()`, which CPython reuses before libzmq has released the name); its socket is made, read
and closed by the thread that owns the monitored socket.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
          | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

NEVER = "never reached"
REFUSED = "refused"
TCP_ONLY = "tcp-only"
SPEAKS_ZMQ = "zeromq"
NOT_ZMQ = "not-zeromq"
AUTH_FAILED = "auth-failed"


class Reachability:
    """Per-endpoint link state of one socket, fed by its ZeroMQ monitor."""

    def __init__(self, context: zmq.Context, endpoints: list[str],
                 on_event: Callable[[str, int, int], None] | None = None) -> None:
        """`on_event(endpoint, event, value)` sees every monitor event too (a socket has only
        one monitor, so whoever else needs its events — CURVE handshake reports — asks here)."""
        self.context = context
        self.on_event = on_event
        self._states = dict.fromkeys(endpoints, NEVER)
        self._lock = threading.Lock()
        self._monitored: zmq.Socket | None = None
        self.socket: zmq.Socket | None = None

    def attach(self, sock: zmq.Socket) -> None:
        """Start monitoring `sock` (before it connects); call on the socket's own thread."""
        address = f"inproc://camfabric-monitor-{uuid.uuid4().hex}"
        sock.monitor(address, EVENTS)
        self._monitored = sock
        self.socket = self.context.socket(zmq.PAIR)
        self.socket.linger = 0
        self.socket.connect(address)

    def handle(self) -> None:
        """Read every pending monitor event (on the owner thread)."""
        if self.socket is None:
            return
        for _ in range(256):
            try:
                event = parse_monitor_message(self.socket.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return
            except RuntimeError:
                continue  # not an event message: nothing to learn from it
            endpoint = event["endpoint"].decode("utf-8", "replace")
            self._note(event["event"], endpoint)
            if self.on_event is not None:
                self.on_event(endpoint, event["event"], event["value"])

    def _note(self, event: int, endpoint: str) -> None:
        with self._lock:
            if endpoint not in self._states:
                return
            state = self._states[endpoint]
            if event == zmq.EVENT_CONNECTED:
                state = TCP_ONLY if state in (NEVER, REFUSED) else state
            elif event == zmq.EVENT_CONNECT_RETRIED:
                state = REFUSED if state in (NEVER, REFUSED) else state
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                state = SPEAKS_ZMQ
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                state = AUTH_FAILED
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                state = NOT_ZMQ
            self._states[endpoint] = state

    def state(self, endpoint: str) -> str:
        with self._lock:
            return self._states.get(endpoint, NEVER)

    def describe(self) -> str:
        """One clause per endpoint saying what is known about it and what to check."""
        with self._lock:
            states = dict(self._states)
        return "; ".join(f"{endpoint}: {_explain(state)}" for endpoint, state in states.items())

    def close(self) -> None:
        """Stop monitoring and close the monitor socket (on the owner thread)."""
        if self._monitored is not None:
            try:
                self._monitored.disable_monitor()
            except zmq.ZMQError:
                pass  # the monitored socket is already closed: nothing left to disable
            self._monitored = None
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


def _explain(state: str) -> str:
    return {
        NEVER: "not reached yet",
        REFUSED: "nothing listens there (connection refused) — is the node running, on that port?",
        TCP_ONLY: "something listens there but has not answered as a ZeroMQ publisher — an HTTP "
                  "server such as the gateway's port? The fabric port is the node's `publish`",
        NOT_ZMQ: "something listens there but does not speak ZeroMQ — an HTTP server such as the "
                 "gateway's port? The fabric port is the node's `publish`",
        AUTH_FAILED: "the node refused this client's CURVE key (is its public key in the node's "
                     "authorized_keys_dir, and the node's public key the right one?)",
        SPEAKS_ZMQ: "connected to a ZeroMQ publisher, which sent nothing we subscribe to",
    }[state]
