"""Fixtures every test folder shares: a private ZeroMQ context, and the simulated tabletop
scene registered as a source kind (production code does not know it; the tests bring it)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import zmq

from camfabric import sim

sim.register()

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def unused_tcp_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def zmq_context():
    """A fresh ZeroMQ context per test, torn down with linger 0 so no test leaks sockets."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def tcp_endpoint() -> str:
    """A tcp://127.0.0.1:PORT endpoint on an unused port."""
    return f"tcp://127.0.0.1:{unused_tcp_port()}"
