"""`/latest/{id}` answered on the server's loop thread (gateway/quick.py) is the same answer
the app gives: same status, headers and bytes, counted the same, declined whenever the app
would answer anything else."""

from __future__ import annotations

import re
import socket
import time

import numpy as np
import pytest
import requests

from camfabric.protocol import Frame, encode_jpeg

from .support import Feeder, deliver, wait_until


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint)
    deliver(node, gw.cache, 0)
    return gw


def exchange(port: int, request: bytes, answers: int = 1) -> list[tuple[dict[str, str], bytes]]:
    """Send `request` (maybe several, pipelined) on one connection; read `answers` answers by
    Content-Length: (headers, body) each, the status line under the key ':status'."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data, result = b"", []
        while len(result) < answers:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, (data, result)
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {":status": lines[0], **dict(line.split(": ", 1) for line in lines[1:])}
            length = int(headers["Content-Length"])
            while len(data) < length:
                chunk = sock.recv(65536)
                assert chunk
                data += chunk
            result.append((headers, data[:length]))
            data = data[length:]
        return result


def test_the_quick_answer_is_the_apps_answer(gateway, node):
    with Feeder(node, fps=20):
        first = exchange(gateway.port, b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n")[0]
        before = gateway.quick.answers
        later = exchange(gateway.port, b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n")[0]
        assert gateway.quick.answers == before + 1  # the camera was asked for: answered quickly
    volatile = {"Date", "X-Frame-Age-Ms", "X-Timestamp", "Content-Length"}
    assert list(first[0]) == list(later[0])  # the same headers, in the same order
    assert {k: v for k, v in first[0].items() if k not in volatile} == \
        {k: v for k, v in later[0].items() if k not in volatile}
    assert later[0][":status"] == "HTTP/1.1 200 OK" and later[1][:2] == b"\xff\xd8"
    assert 0 <= int(later[0]["X-Frame-Age-Ms"]) < 1000


def test_pipelined_and_http10_requests_are_answered_in_order(gateway, node):
    with Feeder(node, fps=20):
        exchange(gateway.port, b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n")
        three = exchange(gateway.port, b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /cameras HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n", answers=3)
        assert [h["Content-Type"] for h, _ in three] == ["image/jpeg", "application/json", "image/jpeg"]
        three = exchange(gateway.port, b"GET /cameras HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n", answers=3)
        assert [h["Content-Type"] for h, _ in three] == ["application/json", "image/jpeg", "image/jpeg"]
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"GET /latest/0 HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):  # the server closes after an HTTP/1.0 answer
                data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Connection: close" in head
    assert len(body) == int(re.search(rb"Content-Length: (\d+)", head).group(1))


def test_quick_answers_are_counted_in_metrics(gateway, node):
    def latest_200() -> float:
        text = requests.get(gateway.url + "metrics", timeout=5).text
        found = re.search(r'camfabric_http_requests_total\{route="/latest/\{cam_id\}",status="200"\} (\S+)',
                          text)
        return float(found.group(1)) if found else 0.0

    with Feeder(node, fps=20):
        before, quick = latest_200(), gateway.quick.answers
        for _ in range(10):
            assert requests.get(gateway.url + "latest/0", timeout=5).status_code == 200
    assert latest_200() - before == 10 and gateway.quick.answers - quick >= 9


def test_a_camera_that_is_not_live_is_left_to_the_app(gateway, node):
    with Feeder(node, fps=20):
        assert requests.get(gateway.url + "latest/0", timeout=5).status_code == 200
        assert requests.get(gateway.url + "latest/0", timeout=5).status_code == 200  # quick
    # Its node reports it down: the app's 503 with its last error, not a quick 200.
    answer, = wait_until(lambda: node.meta(0, connected=False, last_error="VIDIOC_DQBUF: No such device")
                         or (a := requests.get(gateway.url + "latest/0", timeout=5)).status_code == 503
                         and (a,), timeout=5, what="camera 0 reported down")  # (a response is falsy)
    assert answer.json()["title"] == "Camera not live" and answer.headers["Retry-After"]
    assert answer.json()["last_error"] == "VIDIOC_DQBUF: No such device"
    for path in ("latest/0?x=1", "latest/7", "latest/01x"):
        assert requests.get(gateway.url + path, timeout=5).status_code in (400, 404, 503)


def test_a_large_frame_to_a_slow_reader_arrives_whole(gateway, node):
    noise = np.random.default_rng(7).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    jpeg = encode_jpeg(noise, quality=95)  # ~1.5 MB: more than a socket takes at once
    node.publisher.publish(Frame(cam=0, seq=10_000, t_capture_ns=time.time_ns(), w=1920, h=1080,
                                 encoding="jpeg", data=jpeg, node=node.name, frame_id="f"))
    wait_until(lambda: gateway.cache.latest(0) is not None and len(gateway.cache.latest(0).data) == len(jpeg),
               what="the large frame cached")
    node.meta(0)
    exchange(gateway.port, b"GET /latest/0 HTTP/1.1\r\nHost: x\r\n\r\n")  # asked for: now hot
    before = gateway.quick.answers
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.sendall(b"GET /latest/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(8192):
            data += chunk
            time.sleep(0.0005)  # a slow reader: the rest waits in the server's buffer
    assert gateway.quick.answers == before + 1
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and body == jpeg
