"""The dashboard's player in a real browser (headless Chromium): WebRTC from the gateway reaches
"connected" and its <video> shows the camera; with WebRTC refused it falls back to MJPEG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from tests.gateway import chromium

pytest.importorskip("aiortc", reason="WebRTC needs the webrtc extra: pip install 'camfabric[webrtc]'")
BROWSER = chromium.find()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium here (apt-get install chromium)")

W, H, FPS = 640, 360, 15.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TILES = "JSON.stringify([...document.querySelectorAll('.tile')].map((t) => ({...t.dataset, " \
        "videoShown: t.querySelector('video').videoWidth}))) "


@pytest.fixture
def node_endpoint():
    camera = CameraConfig(id=0, name="Bed", resolution=(W, H), fps=FPS)
    with CaptureNode(NodeConfig(name="dashnode", publish="tcp://127.0.0.1:0", cameras=(camera,))) as node:
        yield node.endpoint


@pytest.fixture
def gateway(node_endpoint):
    with Gateway(GatewayConfig(port=0, subscribe=(node_endpoint,))) as gw:
        deadline = time.monotonic() + 5
        while requests.get(gw.url + "cameras", timeout=2).json() == {}:
            assert time.monotonic() < deadline, "the gateway never heard of camera 0"
            time.sleep(0.05)
        yield gw


def tiles_when(browser: chromium.Chromium, done, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        tiles = json.loads(browser.evaluate(TILES) or "[]")
        if (tiles and done(tiles[0])) or time.monotonic() > deadline:
            return tiles
        time.sleep(0.25)


def test_the_dashboard_plays_webrtc_and_its_video_has_a_picture(gateway, tmp_path):
    with chromium.Chromium(BROWSER, gateway.url) as browser:
        tiles = tiles_when(browser, lambda t: t.get("state") in ("connected", "fallback"))
        assert tiles, "the dashboard drew no camera tile"
        tile = tiles[0]
        assert tile.get("player") == "webrtc" and tile.get("state") == "connected", tile
        assert (int(tile["videoWidth"]), int(tile["videoHeight"])) == (W, H)
        assert tile["videoShown"] > 0
        shot = os.environ.get("CAMFABRIC_WEBRTC_SCREENSHOT") or str(tmp_path / "webrtc.png")
        time.sleep(1)
        browser.screenshot(shot)
        assert os.path.getsize(shot) > 10_000


WITHOUT_WEBRTC = """
import sys
sys.modules["av"] = sys.modules["aiortc"] = None  # as on a host without the webrtc extra
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
with Gateway(GatewayConfig(port=0, subscribe=(sys.argv[1],))) as gw:
    print(gw.url, flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def gateway_without_webrtc(node_endpoint):
    process = subprocess.Popen([sys.executable, "-c", WITHOUT_WEBRTC, node_endpoint], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), "the gateway without WebRTC did not start"
        deadline = time.monotonic() + 5
        while requests.get(url + "cameras", timeout=2).json() == {}:
            assert time.monotonic() < deadline, "the gateway never heard of camera 0"
            time.sleep(0.05)
        yield url
    finally:
        process.stdin.close()
        process.wait(10)


def test_without_the_extra_the_routes_say_what_to_install_and_the_dashboard_plays_mjpeg(
        gateway_without_webrtc):
    url = gateway_without_webrtc
    refused = requests.post(url + "webrtc/0/whep", data=b"v=0\r\n", timeout=5,
                            headers={"Content-Type": "application/sdp"})
    assert refused.status_code == 501
    assert "camfabric[webrtc]" in refused.json()["description"]
    assert requests.get(url + "latest/0", timeout=5).status_code in (200, 503)  # the rest works
    with chromium.Chromium(BROWSER, url) as browser:
        tiles = tiles_when(browser, lambda t: t.get("player") == "mjpeg" and t.get("fallback"))
        assert tiles and tiles[0].get("player") == "mjpeg", tiles
        assert tiles[0]["fallback"] == "not installed on the gateway"
        deadline = time.monotonic() + 10
        while browser.evaluate("document.querySelector('.tile img').naturalWidth") != W:
            assert time.monotonic() < deadline, "the MJPEG stream showed no picture"
            time.sleep(0.25)
