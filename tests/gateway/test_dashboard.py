"""The dashboard's MJPEG player with a camera nobody watched yet: the gateway holds no frame of
it (on demand, nothing was subscribed), and the tile still starts its stream and shows the
camera — over the HTTP the dashboard uses, and in a real browser (headless Chromium) where
there is one."""

from __future__ import annotations

import time

import pytest
import requests

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from tests.gateway import chromium

from .support import RawHttp, read_part_by_length, wait_until

W, H = 320, 240


@pytest.fixture
def gateway(make_gateway, zmq_context):
    camera = CameraConfig(id=0, name="Bed", resolution=(W, H), fps=5)
    node = CaptureNode(NodeConfig(name="n", publish="tcp://127.0.0.1:0", cameras=(camera,)),
                       zmq_context).start()
    try:
        gw = make_gateway(node.endpoint)
        wait_until(lambda: requests.get(gw.url + "status", timeout=5).json().get("0", {}).get("connected"),
                   10.0, what="camera 0 connected")
        yield gw
    finally:
        node.stop()


def _unwatched(gw) -> dict:
    """Camera 0's /status entry, which says the gateway holds no frame of it."""
    entry = requests.get(gw.url + "status", timeout=5).json()["0"]
    assert entry["connected"] and entry["health"]["gateway"]["frame_age_ms"] is None
    return entry


def test_a_stream_starts_for_a_camera_with_no_cached_frame(gateway):
    """What the tile does when /status shows the camera connected without a frame: /cam/0
    answers with the camera's picture, not a 503 asking to come back later."""
    _unwatched(gateway)
    conn = RawHttp(gateway.url, "/cam/0")
    try:
        assert conn.status == 200
        part = read_part_by_length(conn)
        assert abs(part.timestamp - time.time()) < 2.0
    finally:
        conn.close()


BROWSER = chromium.find()


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (apt-get install chromium)")
def test_the_dashboard_shows_a_camera_nobody_watched(gateway):
    _unwatched(gateway)
    with chromium.Chromium(BROWSER, gateway.url + "?player=mjpeg") as browser:
        deadline = time.monotonic() + 15
        while browser.evaluate("document.querySelector('.tile img')?.naturalWidth || 0") != W:
            assert time.monotonic() < deadline, "the dashboard never showed camera 0's stream"
            time.sleep(0.25)
        tile = browser.evaluate("JSON.stringify(document.querySelector('.tile').dataset)")
    assert '"player":"mjpeg"' in tile
