"""camfabric.client against a real gateway (Waitress on loopback) over a real capture node, and
against a server in front of it that answers what a broken proxy would."""

from __future__ import annotations

import email.utils
import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from camfabric import client as client_module
from camfabric.capture_node.config import NodeConfig, demo_cameras
from camfabric.capture_node.node import CaptureNode
from camfabric.client import (
    FrameUnavailable,
    GatewayClient,
    GatewayError,
    GatewayUnreachable,
    InvalidRequest,
    LatestFrame,
)
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import CamfabricError, FrameTimeout, Meta, Publisher, UnknownCamera, decode_jpeg

from .conftest import ANY_PORT

W, H = 160, 120


def wait_until(predicate, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except CamfabricError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fabric() -> Iterator[Gateway]:
    """A capture node with the cell's three cameras and a gateway over it."""
    config = NodeConfig(name="cell", publish=ANY_PORT, cameras=demo_cameras(W, H, 15))
    with CaptureNode(config) as node:
        gateway = Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,))).start()
        try:
            wait_until(lambda: len(gateway.cache.camera_ids()) == 3 and gateway.cache.latest(2),
                       what="three cameras with frames")
            yield gateway
        finally:
            gateway.stop()


@pytest.fixture
def cams(fabric) -> Iterator[GatewayClient]:
    with GatewayClient(fabric.url) as client:
        yield client


def test_cam_snap_is_a_jpeg_captured_after_the_call(cams):
    before = time.time()
    jpeg = cams.cam_snap(1)
    assert decode_jpeg(jpeg).shape == (H, W, 3)
    latest = cams.latest(1)
    assert latest.t_capture is not None and latest.t_capture > before - 0.05


def test_latest_carries_the_frames_age(cams):
    shot = cams.latest(2)
    assert isinstance(shot, LatestFrame) and 0 <= shot.age_ms < 1000
    assert shot.image.shape == (H, W, 3)
    time.sleep(0.05)
    assert shot.age_now_ms() >= shot.age_ms + 50  # kept, it keeps ageing


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_frame_is_numpy_bgr(cams, fmt):
    image = cams.frame(0, format=fmt)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.std() > 0


def test_cameras_status_and_world(cams):
    registry = cams.cameras()
    assert sorted(registry) == [0, 1, 2]
    assert [registry[c]["role"] for c in (0, 1, 2)] == ["overhead", "end_effector", "side_profile"]
    status = cams.status()
    assert sorted(status) == [0, 1, 2] and status[0]["width"] == W
    assert isinstance(cams.world(), dict)  # an empty model when no tracker runs


def test_an_unknown_camera(cams):
    with pytest.raises(UnknownCamera) as caught:
        cams.cam_snap(9)
    assert caught.value.cam == 9 and isinstance(caught.value, CamfabricError)
    for call in (cams.latest, cams.frame):
        with pytest.raises(UnknownCamera):
            call(9)


@pytest.mark.parametrize("cam", [-1, "0", 1.5, True, None])
def test_bad_camera_ids_are_refused_before_any_request(cam, closed_port):
    with GatewayClient(f"http://127.0.0.1:{closed_port}") as cams, pytest.raises(InvalidRequest):
        cams.cam_snap(cam)  # type: ignore[arg-type]


def test_a_bad_format_is_refused(cams):
    with pytest.raises(InvalidRequest) as caught:
        cams.frame(0, format="png")
    assert isinstance(caught.value, ValueError) and "png" in str(caught.value)


def test_no_frame_yet_says_when_to_retry(zmq_context):
    # A camera announced by its heartbeat that has not delivered a frame.
    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub:
        gateway = Gateway(GatewayConfig(port=0, subscribe=(pub.endpoint,), snap_timeout_s=0.2),
                          context=zmq_context).start()
        try:
            registry = {"id": 4, "name": "late", "resolution": [W, H]}
            wait_until(lambda: pub.publish(Meta(cam=4, node="n", registry=registry,
                                                health={"connected": True}))
                       and 4 in gateway.cache.camera_ids(), what="camera 4 announced")
            with GatewayClient(gateway.url) as cams:
                with pytest.raises(FrameUnavailable) as caught:
                    cams.latest(4)
                assert caught.value.retry_after is not None and caught.value.retry_after >= 1
                assert isinstance(caught.value, FrameTimeout)
                with pytest.raises(FrameUnavailable):
                    cams.cam_snap(4)
        finally:
            gateway.stop()


def test_a_gateway_nobody_runs_is_unreachable_at_once(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    started = time.monotonic()
    with GatewayClient(url) as cams, pytest.raises(GatewayUnreachable) as caught:
        cams.cameras()
    assert time.monotonic() - started < 2
    assert caught.value.url == url + "/" and isinstance(caught.value, ConnectionError)


def test_a_gateway_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with GatewayClient(url, read_timeout=0.5) as cams, pytest.raises(GatewayUnreachable) as caught:
            cams.cam_snap(0)
        assert 0.4 < time.monotonic() - started < 3
        assert "within 0.5 s" in str(caught.value)


# -- a server in front of the gateway that answers what a broken proxy would ---------------------

class Canned(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up is expected
            super().handle_error(request, client_address)


class CannedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a test can count connections

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        status, headers, body = self.server.answers.get(  # type: ignore[attr-defined]
            self.path.split("?")[0], (404, {}, b""))
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if "X-Drip" not in headers:
            self.wfile.write(body)
            return
        for i in range(len(body)):  # a byte at a time, each well within a read timeout
            self.wfile.write(body[i:i + 1])
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_session_keeps_one_connection(canned):
    canned.answers["/cameras"] = (200, {"Content-Type": "application/json"}, b'{"0": {"id": 0}}')
    with GatewayClient(canned.url) as cams:
        for _ in range(5):
            assert cams.cameras() == {0: {"id": 0}}
    assert canned.connections == 1


def test_answers_that_cannot_be_used_are_gateway_errors(canned):
    canned.answers.update({
        "/snap/0": (200, {"Content-Type": "image/jpeg"}, b"\xff\xd8 cut short"),
        "/latest/0": (200, {"Content-Type": "image/jpeg"}, b"\xff\xd8\xff\xd9"),  # no age header
        "/frame/0": (200, {"X-Frame-Width": "4", "X-Frame-Height": "4", "X-Frame-Channels": "3",
                           "X-Frame-Dtype": "uint8"}, b"\x00" * 47),
        "/cameras": (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
        "/status": (200, {"Content-Type": "application/json"}, b"[1, 2]"),
        "/world": (200, {"Content-Type": "application/json"}, b"{not json"),
    })
    with GatewayClient(canned.url) as cams:
        for call in (lambda: cams.cam_snap(0), lambda: cams.latest(0), lambda: cams.frame(0),
                     cams.cameras, cams.status, cams.world):
            with pytest.raises(GatewayError):
                call()
        with pytest.raises(GatewayError) as caught:
            cams.cameras()
        assert caught.value.status == 502


def test_a_body_that_drips_is_cut_off_at_the_read_timeout(canned):
    canned.answers["/snap/0"] = (200, {"Content-Type": "image/jpeg", "X-Drip": "1"},
                                 b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9")
    started = time.monotonic()
    with GatewayClient(canned.url, read_timeout=1.0) as cams, pytest.raises(GatewayUnreachable) as caught:
        cams.cam_snap(0)
    assert time.monotonic() - started < 3  # not the 10 s the whole drip takes
    assert "no whole answer" in str(caught.value)


def test_an_oversized_body_is_refused(canned):
    canned.answers["/frame/0"] = (200, {"X-Frame-Width": "1000", "X-Frame-Height": "1000",
                                        "X-Frame-Channels": "3", "X-Frame-Dtype": "uint8"},
                                  b"\x00" * 3_000_000)
    with GatewayClient(canned.url, max_body=1_000_000) as cams, pytest.raises(GatewayError) as caught:
        cams.frame(0)
    assert "3000000 bytes, more than the 1000000" in str(caught.value)
    with GatewayClient(canned.url) as cams:
        assert cams.frame(0).shape == (1000, 1000, 3)


def test_a_400_is_an_invalid_request_with_the_servers_reason(canned):
    body = json.dumps({"title": "Bad camera id", "description": "camera id must be ..."}).encode()
    canned.answers["/snap/0"] = (400, {"Content-Type": "application/json"}, body)
    with GatewayClient(canned.url) as cams, pytest.raises(InvalidRequest) as caught:
        cams.cam_snap(0)
    assert caught.value.status == 400 and caught.value.description == "camera id must be ..."


def test_retry_after_as_an_http_date(canned):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    canned.answers["/latest/0"] = (503, {"Retry-After": when}, b"")
    with GatewayClient(canned.url) as cams, pytest.raises(FrameUnavailable) as caught:
        cams.latest(0)
    assert 25 <= caught.value.retry_after <= 31


def test_the_module_helpers_use_camfabric_url(fabric, monkeypatch):
    monkeypatch.setenv("CAMFABRIC_URL", fabric.url)
    monkeypatch.setattr(client_module, "_shared", None)
    assert decode_jpeg(client_module.cam_snap(0)).shape == (H, W, 3)
    assert client_module.latest(0).age_ms >= 0
    assert client_module.frame(0).shape == (H, W, 3)
    assert sorted(client_module.cameras()) == [0, 1, 2]
    assert sorted(client_module.status()) == [0, 1, 2]
    assert isinstance(client_module.world(), dict)
    assert client_module.default_client() is client_module.default_client()
    client_module.default_client().close()


def test_public_names():
    assert sorted(client_module.__all__) == client_module.__all__
    assert all(hasattr(client_module, name) for name in client_module.__all__)
