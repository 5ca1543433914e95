"""Serving details that a user notices only under load."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest
import requests

from camfabric.gateway import waitress_seam
from camfabric.gateway.server import Gateway
from camfabric.gateway.waitress_seam import Throttle
from camfabric.protocol import Frame, encode_jpeg

from .support import Feeder, deliver, wait_until


def deliver_image(node, cache, image: np.ndarray) -> None:
    """Publish `image` as camera 0's frame until the cache holds it."""
    jpeg = encode_jpeg(image)
    h, w = image.shape[:2]

    def arrived() -> bool:
        seq = node.seq[0] = node.seq.get(0, -1) + 1
        node.publisher.publish(Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=w, h=h,
                                     encoding="jpeg", data=jpeg, node=node.name))
        time.sleep(0.05)
        frame = cache.latest(0)
        return frame is not None and frame.data == jpeg

    wait_until(arrived, what="the big frame in the cache")


def test_a_busy_server_warns_once_per_interval_not_once_per_request():
    now = [0.0]
    throttle = Throttle(interval_s=60, clock=lambda: now[0])

    def record() -> logging.LogRecord:
        return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1,
                                 "Task queue depth is %d", (3,), None)

    assert throttle.filter(record())
    assert [throttle.filter(record()) for _ in range(100)] == [False] * 100
    now[0] = 61.0
    passed = record()
    assert throttle.filter(passed)
    assert "100 more" in passed.getMessage()


# -- an unstarvable gateway: abuse over real sockets ---------------------------------------------

def _connect(gw: Gateway, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", gw.port))
    return sock


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed `sock` (EOF or reset), reading and dropping any answer."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _latest_ms(gw: Gateway, n: int) -> list[float]:
    times = []
    with requests.Session() as session:
        for _ in range(n):
            started = time.monotonic()
            resp = session.get(gw.url + "latest/0", timeout=5)
            times.append((time.monotonic() - started) * 1000)
            assert resp.status_code == 200
    return times


@pytest.fixture
def busy_gateway(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=4, threads=8)
    deliver(node, gw.cache, 0)
    return gw


def test_idle_sockets_a_slowloris_and_slow_readers_do_not_starve_latest(busy_gateway, node):
    gw = busy_gateway
    gw.server.idle_timeout_s = 2  # the idle timeout, shortened for the test
    big = np.random.default_rng(5).integers(0, 255, (480, 640, 3), dtype=np.uint8)  # ~400 KB JPEG
    deliver_image(node, gw.cache, big)
    feeder = Feeder(node, fps=5, image=big).__enter__()  # the camera stays live throughout
    idle = [_connect(gw) for _ in range(100)]
    loris = _connect(gw)
    loris.sendall(b"GET /latest/0 HTTP/1.1\r\n")
    slow = []
    for _ in range(50):  # ask for a big JPEG and never read it
        reader = _connect(gw, rcvbuf=4096)
        reader.sendall(b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.append(reader)
    try:
        started = time.monotonic()
        times = _latest_ms(gw, 20)
        assert time.monotonic() - started < 10, times
        # The slowloris keeps trickling header bytes; it is cut off after the header timeout.
        cut = False
        deadline = time.monotonic() + waitress_seam.HEADER_TIMEOUT_S + 5
        while time.monotonic() < deadline and not cut:
            try:
                loris.sendall(b"X")
            except OSError:
                cut = True
                break
            cut = _closed_by_server(loris, 0.5)
        assert cut, "the slowloris was never cut off"
        assert all(_closed_by_server(s, 4.0) for s in idle[:10]), "idle sockets were kept open"
        assert _latest_ms(gw, 5)
    finally:
        feeder.__exit__(None, None, None)
        for s in [*idle, loris, *slow]:
            s.close()


def test_a_huge_request_body_is_refused_unread_with_json(busy_gateway):
    sock = _connect(busy_gateway)
    sock.sendall(b"POST /latest/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n")
    head = sock.recv(65536)
    sock.close()
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"application/json" in head


def test_an_oversized_request_head_is_refused_with_json(busy_gateway):
    sock = _connect(busy_gateway)
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    sock.close()
    assert answer.split(b" ", 2)[1] in (b"431", b"400")
    assert b"application/json" in answer


def test_snap_on_a_camera_its_node_reports_dead_answers_at_once(make_gateway, node):
    """A dead camera behind a live node: /snap must not hold a request thread for its timeout,
    or a few clients looping on it starve every other request."""
    gw = make_gateway(node.endpoint, snap_timeout_s=3.0, max_streams=2, threads=4)
    deliver(node, gw.cache, 0)
    node.meta(0, connected=False, last_error="read failed: device unplugged")
    wait_until(lambda: gw.cache.status()["0"]["health"].get("connected") is False,
               what="the node's report reaching the gateway")
    started = time.monotonic()
    answers = [requests.get(gw.url + "snap/0", timeout=10) for _ in range(8)]
    assert time.monotonic() - started < 2.0  # 8 × 3 s if each waited for its timeout
    assert {a.status_code for a in answers} == {503}
    assert "device unplugged" in answers[0].json()["description"]
