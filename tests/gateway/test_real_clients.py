"""What real clients meet at the gateway: socat half-closing after an HTTP/1.0 request (as
scripts, health checks and small embedded clients do), HEAD of streams and of unknown paths,
and a camera that is still starting."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .support import Feeder, wait_until

ROUTES = ("/snap/0", "/latest/0", "/frame/0", "/frame/0?format=raw", "/snapshot.jpg",
          "/?action=snapshot", "/cameras", "/status", "/world", "/scan", "/metrics", "/",
          "/static/dashboard.js", "/nope", "/latest/99", "/cam/0", "/stream.mjpg",
          "/?action=stream", "/cam/0?fps=5")
STREAMS = {"/cam/0", "/stream.mjpg", "/?action=stream", "/cam/0?fps=5"}
TRIES = 20


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=8, snap_timeout_s=2.0)
    with Feeder(node, fps=20):
        wait_until(lambda: 0 in gw.cache.camera_ids(), what="camera 0 announced")
        yield gw


def socat(port: int, request: bytes) -> bytes:
    """`printf REQUEST | socat - TCP:127.0.0.1:PORT`: socat half-closes once its input ends
    and waits (its -t, 0.5 s by default) for the answer to end."""
    done = subprocess.run(["socat", "-", f"TCP:127.0.0.1:{port}"], input=request,
                          capture_output=True, timeout=20)
    return done.stdout


def whole(answer: bytes, stream: bool) -> bool:
    """Whether `answer` is a whole HTTP/1.0 answer: its body to its Content-Length, or for a
    stream, its headers and a first whole part."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.0 "):
        return False
    if stream:
        return b"\xff\xd8" in body and b"\xff\xd9" in body
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    return length is not None and len(body) == length


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (apt-get install socat)")
def test_half_closing_http10_clients_get_their_answer_on_every_route(gateway):
    def tries(route: str) -> int:
        request = f"GET {route} HTTP/1.0\r\n\r\n".encode()
        return sum(whole(socat(gateway.port, request), route in STREAMS) for _ in range(TRIES))

    with ThreadPoolExecutor(4) as pool:
        answered = dict(zip(ROUTES, pool.map(tries, ROUTES), strict=True))
    assert answered == {route: TRIES for route in ROUTES}


def raw_head(port: int, path: str) -> tuple[bytes, bytes]:
    """HEAD over HTTP/1.1 and Connection: close: (the head, whatever came after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.parametrize("path", ["/cam/0", "/stream.mjpg", "/?action=stream", "/cam/0?fps=2"])
def test_head_of_a_stream_sends_no_content_length_and_no_body(gateway, path):
    head, rest = raw_head(gateway.port, path)
    assert head.startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace" in head
    assert b"content-length" not in head.lower(), head
    assert rest == b""
    assert gateway.slots.in_use == 0


@pytest.mark.parametrize("path", ["/nope", "/cam/x", "/latest/99", "/static/none.js"])
def test_head_of_an_error_announces_exactly_gets_body_length(gateway, path):
    got = requests.get(gateway.url.rstrip("/") + path, timeout=5)
    head = requests.head(gateway.url.rstrip("/") + path, timeout=5)
    assert head.status_code == got.status_code >= 400
    assert int(head.headers["Content-Length"]) == len(got.content)


def test_a_camera_that_is_starting_has_no_frame_yet_and_is_not_disconnected(make_gateway, node):
    gw = make_gateway(node.endpoint, snap_timeout_s=0.2)
    # What a node says of a camera it is still opening: not connected, no error, no frame.
    wait_until(lambda: node.meta(0, connected=False) or 0 in gw.cache.camera_ids(),
               what="camera 0 announced")
    for path in ("latest/0", "snapshot.jpg", "?action=snapshot"):
        for method in ("GET", "HEAD"):
            answer = requests.request(method, gw.url + path, timeout=5)
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
            if method == "GET":
                body = answer.json()
                assert body["title"] == "No frame yet", body
                assert "no frame yet" in body["description"]
                assert "disconnected" not in json.dumps(body)
    # A camera its node reports down with an error is disconnected, as before.
    wait_until(lambda: node.meta(0, connected=False, last_error="VIDIOC_DQBUF: No such device")
               or "No such device" in requests.get(gw.url + "latest/0", timeout=5).text,
               what="the error reported")
    body = requests.get(gw.url + "latest/0", timeout=5).json()
    assert "is disconnected" in body["description"] and body["last_error"].startswith("VIDIOC")
