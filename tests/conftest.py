"""Fixtures every test folder shares: a private ZeroMQ context, and the simulated tabletop
scene registered as a source kind (production code does not know it; the tests bring it)."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from camfabric import sim

sim.register()

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SLOW = "CAMFABRIC_SLOW_TESTS"


def pytest_addoption(parser) -> None:
    parser.addoption("--slow", action="store_true",
                     help=f"also run the long real-time scenarios marked slow (or {SLOW}=1; .ci/run does)")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: a scenario that needs a long stretch of real time (a minute-"
                            f"long partition, a minute of pacing); run with --slow or {SLOW}=1")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--slow") or os.environ.get(SLOW) == "1":
        return
    skip = pytest.mark.skip(reason=f"a long real-time scenario: run with --slow or {SLOW}=1 (.ci/run does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def zmq_context():
    """A fresh ZeroMQ context per test, torn down with linger 0 so no test leaks sockets."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


# Bind any free port on loopback; the test reads the real endpoint back from the object that
# bound it (`.endpoint`, `.url`, `.port`) or from the line a process prints when it is ready.
# Never pick a port, close it and bind it again: anything else on the machine may take it.
ANY_PORT = "tcp://127.0.0.1:0"
ENDPOINT = r"tcp://127\.0\.0\.1:\d+"
URL = r"http://127\.0\.0\.1:\d+/"


@pytest.fixture
def ipc_endpoint(tmp_path) -> str:
    """A Unix-socket endpoint only this test uses: for a node that restarts where it was."""
    return f"ipc://{tmp_path}/fabric.sock"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port where nothing listens, for as long as the test runs: bound and held, never
    listening, so a connection is refused and nothing else can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def reserved_port() -> Iterator[int]:
    """A loopback port for a server that must be told its port up front (rpicam-vid listens
    where its command line says). Held bound with SO_REUSEADDR and never listening for the whole
    test: the server (SO_REUSEADDR too, as rpicam-vid and our fake set it) may bind it, while
    the kernel hands it to nobody else's bind(0) or outgoing connection meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class Output:
    """A child process's stream (stderr, usually), read on a thread as it comes: wait for the
    line that says where the process bound, and read everything it wrote afterwards."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first match of `pattern` in a line; AssertionError with the output so far when
        the stream ends or `timeout` passes first (a cold start imports OpenCV: generous)."""
        regex, seen = re.compile(pattern), 0
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    why = "the stream ended" if self._done else f"{timeout} s passed"
                    raise AssertionError(f"{why} before a line matching {pattern!r}:\n{''.join(self.lines)}")
                self._changed.wait(left)

    def text(self, timeout: float = 10.0) -> str:
        """All of it, once the stream has ended (call after the process exited)."""
        self._thread.join(timeout)
        with self._changed:
            return "".join(self.lines)
