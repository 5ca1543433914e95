"""Liveness and size limits of one fabric link, set where each socket is made.

A TCP connection whose far end lost power, or lost its connection state, sends no FIN and no
RST: without help the near end keeps it ESTABLISHED forever and never reconnects, so a camera
whose host came back stays dark. `configure_link(sock)` gives every fabric socket three guards:

- ZeroMQ heartbeats (ZMTP 3.1 PING/PONG, handled by libzmq's I/O thread, not by Python) on
  the sending side (PUB, XPUB): a PING every `HEARTBEAT_IVL_MS`; a connection that carried
  nothing, PONG included, for `HEARTBEAT_TIMEOUT_MS` is closed, and ZeroMQ reconnects on its
  own. Receivers (SUB, XSUB) send no PINGs of their own: libzmq 4.3.5 aborts the process
  ("Assertion failed: !_io_error", stream_engine_base.cpp) when a receiver's queue is full —
  the program has not read it for a moment — and the peer resets the connection, because the
  heartbeat timer then writes to the dead connection (zeromq/libzmq#4364, #4830; reproduced in
  tests/protocol/test_link.py).
- TCP keepalive, for the same silence seen by the kernel: a link that brought nothing for
  `KEEPALIVE_IDLE_S` is probed every `KEEPALIVE_INTVL_S`; a peer that rebooted answers the first
  probe with the RST that ends the dead connection at once. And on receivers a bound on
  unacknowledged data (`ZMQ_TCP_MAXRT`, TCP_USER_TIMEOUT on Linux): what they send — a PONG, a
  subscription — that goes unanswered for `UNACKED_MAX_MS` (a partition, a host without power)
  closes the connection, which keepalive alone would not do while data is outstanding. So a
  receiver notices a dead link within about 4 s, as the sender does by its heartbeats.

- A connect timeout and a short reconnect interval, so a link that comes back is used within
  seconds. A dead connection is replaced by a new attempt, and during a partition each
  attempt's SYN is lost: without `ZMQ_CONNECT_TIMEOUT` that attempt waits on the kernel's SYN
  retransmits (1, 2, 4, 8, 16 s: a partition of 60 s healed only 12-15 s later, a host back
  with a new MAC address after a minute). Each attempt is abandoned after
  `CONNECT_TIMEOUT_MS` and the next follows `RECONNECT_IVL_MS` later, backing off to at most
  `RECONNECT_IVL_MAX_MS`: once the path is back, the next SYN goes out within about
  `CONNECT_TIMEOUT_MS + RECONNECT_IVL_MAX_MS` (2 s), however long it was away. (A bound
  socket ignores these; set on every socket, they need no thought about which side connects.)

A receiving socket also gets `ZMQ_MAXMSGSIZE`: a peer that sends a bigger message part is
disconnected by libzmq before the part is buffered, so no message can make a receiver
allocate more than the format allows. libzmq treats that as a protocol error and does not
reconnect to such a peer: a sender that breaks the limit is cut off until the receiver
restarts (our own encoder never sends one). The publisher's XPUB receives only subscriptions
and gets a small limit of its own.
"""

from __future__ import annotations

import zmq

from .wire import MAX_PAYLOAD

HEARTBEAT_IVL_MS = 1000
# Any message received counts as a sign of life, so a link busy with frames never times out;
# this bounds only true silence. A frame part slower than this to arrive whole on a congested
# link also counts as silence, hence not less than a few seconds.
HEARTBEAT_TIMEOUT_MS = 4000
HEARTBEAT_TTL_MS = 4000
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTVL_S = 1
KEEPALIVE_CNT = 3
UNACKED_MAX_MS = 4000
# A LAN answers a SYN in milliseconds; a second is generous, and bounds how long an attempt
# made while the path was down keeps waiting after it is back.
CONNECT_TIMEOUT_MS = 1000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000
# The sockets that send PINGs; the others bound their unacknowledged data (module docstring).
SENDERS = frozenset({zmq.PUB, zmq.XPUB})
# A subscription message is a topic prefix: a few dozen bytes.
MAX_SUBSCRIPTION = 1024


def configure_link(sock: zmq.Socket, *, max_message: int | None = MAX_PAYLOAD) -> None:
    """Set heartbeats (on a PUB or XPUB) or the bound on unacknowledged data (on others), TCP
    keepalive, the connect timeout and reconnect interval, and (when `max_message` is given)
    ZMQ_MAXMSGSIZE on `sock`.

    Call it before `bind`/`connect`: libzmq copies the options into each new connection.
    """
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    if sock.type in SENDERS:
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TTL_MS)
    else:
        sock.setsockopt(zmq.TCP_MAXRT, UNACKED_MAX_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    if max_message is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, int(max_message))


__all__ = ["configure_link"]
