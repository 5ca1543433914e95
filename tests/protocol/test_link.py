"""The fabric's link options (protocol/link.py) in a real libzmq: a receiver that fell behind
survives its publisher going away.

libzmq 4.3.5 aborts the whole process ("Assertion failed: !_io_error
(stream_engine_base.cpp:310)") when a connection's input is stopped — the receiving socket's
queue is full because the program has not read it for a moment — and the peer then resets the
connection: the engine marks the I/O error, and the next ZMTP heartbeat its own
HEARTBEAT_IVL timer sends writes to the dead connection (libzmq's `timer_event` calls
`out_event` without the `_io_error` check `restart_output` has; zeromq/libzmq#4364, and the
root-cause analysis in zeromq/libzmq#4830). A gateway worker starved of CPU while its node was
killed died this way in the soak. Each case runs in a child process, since the failure is an
abort.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq

from camfabric.protocol.link import configure_link

# The child: a SUB with the fabric's link options and a queue of one message, that reads nothing
# for a while (a program busy elsewhere, or starved of CPU), then says it is still alive.
RECEIVER = r"""
import sys, time, zmq
from camfabric.protocol.link import configure_link
sock = zmq.Context().socket(zmq.{kind})
sock.rcvhwm = 1
configure_link(sock)
if {kind!r} == "SUB":
    sock.setsockopt(zmq.SUBSCRIBE, b"")
else:
    sock.send(b"\x01")
sock.connect(sys.argv[1])
print("connected", flush=True)
time.sleep(float(sys.argv[2]))
print("alive", flush=True)
"""


@pytest.mark.parametrize("kind", ["SUB", "XSUB"])  # a Subscriber, and the proxy's upstream side
@pytest.mark.timeout(30)
def test_a_receiver_that_stopped_reading_survives_its_publisher_going_away(zmq_context, kind):
    pub = zmq_context.socket(zmq.PUB)
    pub.linger = 0
    configure_link(pub)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    # Its publisher's heartbeats (1 s) and its link's timeouts (4 s) all come due in this time.
    alive_for = 6.0
    child = subprocess.Popen([sys.executable, "-c", RECEIVER.format(kind=kind), f"tcp://127.0.0.1:{port}",
                              str(alive_for)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        # Frames until the child's queue and both kernels' buffers are full: its input stops.
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            pub.send(b"x" * 100_000)
            time.sleep(0.001)
        pub.close()  # the node goes away; the child's next packet to it draws a reset
        out, err = child.communicate(timeout=alive_for + 10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0 and out.strip() == "alive", f"exit {child.returncode}: {err[-500:]}"
