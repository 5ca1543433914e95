"""WebRTC by WHEP from the gateway: a real node, a real gateway, a real WebRTC viewer (aiortc)
doing the Mainsail/Fluidd `webrtc-mediamtx` sequence on loopback."""

from __future__ import annotations

import asyncio
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
from camfabric.gateway.webrtc import (
    CONNECT_TIMEOUT_S,
    CONSENT_FAILURES,
    CONSENT_INTERVAL_S,
    RELEASE_AFTER_S,
)
from camfabric.protocol import topics

pytest.importorskip("aiortc", reason="WebRTC needs the webrtc extra: pip install 'camfabric[webrtc]'")
from aioice.stun import RETRY_RTO as STUN_TIMEOUT_S  # noqa: E402  (a request's timeout)

from camfabric.sim.whep_client import view  # noqa: E402  (needs aiortc)

W, H, FPS = 320, 240, 15.0
H264 = topics.frame(0, "h264")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def node():
    camera = CameraConfig(id=0, name="Bed", resolution=(W, H), fps=FPS)
    with CaptureNode(NodeConfig(name="webrtcnode", publish="tcp://127.0.0.1:0",
                                cameras=(camera,))) as node:
        yield node


@pytest.fixture
def gateway(node):
    with Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,))) as gw:
        deadline = time.monotonic() + 5
        while requests.get(gw.url + "cameras", timeout=2).json() == {}:
            assert time.monotonic() < deadline, "the gateway never heard of camera 0"
            time.sleep(0.05)
        yield gw


def h264_encodes(node: CaptureNode) -> int:
    return node.loops[0].counters["h264_encodes"]


def test_a_mainsail_style_viewer_plays_the_camera_at_its_rate_and_size(node, gateway):
    assert h264_encodes(node) == 0, "no viewer yet: no H.264 encode"
    scrapes, statuses = [], []

    def scrape(seen) -> None:
        time.sleep(0.5)
        scrapes.append(requests.get(gateway.url + "metrics", timeout=5).text)
        statuses.append(requests.get(gateway.url + "status", timeout=5).json())

    seen = asyncio.run(view(gateway.url + "webrtc/0", seconds=3.0, on_playing=scrape))

    assert seen.options.status_code in (200, 204)
    assert "Link" not in seen.options.headers, "no ICE servers unless configured (no STUN)"
    assert seen.post.status_code == 201, seen.post.text
    assert seen.post.headers["Content-Type"].startswith("application/sdp")
    assert seen.post.headers["ETag"] and seen.post.headers["Location"].startswith("/webrtc/0/whep/")
    assert {"Location", "ETag"} <= set(seen.post.headers["Access-Control-Expose-Headers"].split(", "))
    answer = seen.post.text
    video = answer.split("m=video", 1)[1].split("m=audio", 1)[0]
    assert "H264/90000" in video and "VP8" not in video, "the node's own H.264, never re-encoded"
    audio = answer[answer.index("m=audio"):]
    assert audio.startswith("m=audio 0 ") or "a=inactive" in audio, "audio answered inactive/rejected"
    assert seen.patch.status_code == 204, seen.patch.text
    assert seen.first_picture_s is not None and seen.first_picture_s < 2.0, \
        "the first viewer gets video within 2 s"
    assert set(seen.sizes) == {(W, H)}
    # Decoded at the source's rate: within a tenth of it (pictures are timed on arrival).
    assert seen.rate() == pytest.approx(FPS, rel=0.1)
    assert seen.delete.status_code == 200
    assert 'camfabric_webrtc_viewers{camera="0"} 1.0' in scrapes[0]
    sent = [line for line in scrapes[0].splitlines()
            if line.startswith('camfabric_webrtc_bytes_sent_total{camera="0"}')]
    assert sent and float(sent[0].split()[-1]) > 0
    webrtc = statuses[0]["0"]["health"]["gateway"]["webrtc"]
    assert webrtc["viewers"] == 1 and webrtc["bytes_sent"] > 0
    after_delete = requests.get(gateway.url + "metrics", timeout=5).text
    assert 'camfabric_webrtc_viewers{camera="0"} 0.0' in after_delete
    # Leaving: the gateway releases the camera's H.264 and the node stops encoding it.
    assert node.publisher.wait_for_no_subscriber(H264, timeout=RELEASE_AFTER_S + 3)
    after = h264_encodes(node)
    time.sleep(5 / FPS)
    assert h264_encodes(node) <= after + 1


def test_a_viewer_that_vanishes_without_delete_is_dropped_within_seconds(node, gateway):
    viewer = subprocess.Popen([sys.executable, "-m", "camfabric.sim.whep_client",
                               gateway.url + "webrtc/0", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        line = viewer.stdout.readline()
        assert json.loads(line)["playing"], line
        assert node.publisher.wants(H264)
    finally:
        viewer.kill()  # no DELETE, no DTLS close: gone, like a laptop shut
        viewer.wait(5)
    gone = time.monotonic()
    # Each consent round waits up to 1.2 intervals, then a STUN transaction's timeout (0.5 s,
    # no retransmission); after the last, the camera is released RELEASE_AFTER_S later; 3 s
    # for a loaded machine's scheduling.
    bound = CONSENT_FAILURES * (CONSENT_INTERVAL_S * 1.2 + STUN_TIMEOUT_S) + RELEASE_AFTER_S + 3
    assert node.publisher.wait_for_no_subscriber(H264, timeout=bound)
    assert time.monotonic() - gone < bound


def test_ten_viewers_of_one_camera_cost_one_encode(node, gateway):
    async def ten() -> list:
        return await asyncio.gather(*(view(gateway.url + "webrtc/0", seconds=2.0) for _ in range(10)))

    frames_before = node.loops[0].counters["frames"]
    views = asyncio.run(ten())
    captures = node.loops[0].counters["frames"] - frames_before
    assert all(v.post.status_code == 201 and v.sizes for v in views)
    # One encode per capture while anyone watches, however many watch.
    assert h264_encodes(node) <= captures + 1
    # And when they have all left, none.
    assert node.publisher.wait_for_no_subscriber(H264, timeout=RELEASE_AFTER_S + 3)


def post(gateway, path: str, body: bytes, content_type: str = "application/sdp") -> requests.Response:
    return requests.post(gateway.url + path, data=body, headers={"Content-Type": content_type},
                         timeout=10)


@pytest.mark.parametrize("body, why", [
    (b"hello", "not an SDP offer"),
    (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "no video"),
    (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
     b"a=rtpmap:96 VP8/90000\r\n", "cannot be answered|no H.264"),
])
def test_a_bad_offer_is_a_400_with_json(gateway, body, why):
    answer = post(gateway, "webrtc/0/whep", body)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["title"] == "Bad SDP offer"
    import re
    assert re.search(why, answer.json()["description"])


def test_whep_errors_are_json(gateway):
    wrong_type = post(gateway, "webrtc/0/whep", b"v=0", "text/plain")
    assert wrong_type.status_code == 415 and wrong_type.json()["title"]
    unknown_camera = post(gateway, "webrtc/7/whep", b"v=0\r\nm=video 9 x\r\n")
    assert unknown_camera.status_code == 404 and "camera 7" in unknown_camera.json()["description"]
    too_big = post(gateway, "webrtc/0/whep", b"v=0\r\n" + b"a=x\r\n" * 8000)
    assert too_big.status_code == 413 and too_big.json()["title"]
    unknown_session = requests.delete(gateway.url + "webrtc/0/whep/0123abcd-nosuch", timeout=5)
    assert unknown_session.status_code == 404 and unknown_session.json()["title"]
    preflight = requests.options(gateway.url + "webrtc/0/whep", timeout=5, headers={
        "Origin": "http://mainsail.local", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


def test_a_patch_with_a_stale_etag_is_412(node, gateway):
    statuses = {}

    def patch_stale(seen) -> None:
        stale = requests.patch(seen.location, data=b"a=end-of-candidates\r\n", timeout=5,
                               headers={"Content-Type": "application/trickle-ice-sdpfrag",
                                        "If-Match": '"not-the-etag"'})
        statuses["stale"] = stale.status_code

    seen = asyncio.run(view(gateway.url + "webrtc/0", seconds=0.2, on_playing=patch_stale))
    assert statuses == {"stale": 412}
    assert seen.delete.status_code == 200
    again = requests.delete(seen.location, timeout=5)
    assert again.status_code == 404


def test_every_request_of_a_session_works_whichever_worker_takes_it(node, gateway):
    # Two gateway processes' worth of WebRTC: the POST reaches one, the PATCH and DELETE the
    # other, which relays them to the owner of the session.
    with Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,))) as other:
        seen = asyncio.run(view(gateway.url + "webrtc/0", seconds=1.0, session_via=other.url))
        assert seen.location.startswith(other.url)
        assert seen.post.status_code == 201 and seen.patch.status_code == 204, seen.patch.text
        assert set(seen.sizes) == {(W, H)}
        assert seen.delete.status_code == 200, seen.delete.text
        assert requests.delete(seen.location, timeout=5).status_code == 404
        assert node.publisher.wait_for_no_subscriber(H264, timeout=RELEASE_AFTER_S + 3)


def test_a_session_whose_ice_never_starts_is_dropped(node, gateway):
    from aiortc import RTCPeerConnection

    from camfabric.sim.whep_client import split_candidates

    async def post_and_walk_away() -> requests.Response:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer, _ = split_candidates(pc.localDescription.sdp)  # and never PATCHes them
        await pc.close()
        return requests.post(gateway.url + "webrtc/0/whep", data=offer.encode(), timeout=10,
                             headers={"Content-Type": "application/sdp"})

    assert asyncio.run(post_and_walk_away()).status_code == 201
    assert node.publisher.wait_for_subscriber(H264, timeout=5)
    # The watchdog looks once a second; then the camera is released RELEASE_AFTER_S later.
    bound = CONNECT_TIMEOUT_S + 1 + RELEASE_AFTER_S + 3
    assert node.publisher.wait_for_no_subscriber(H264, timeout=bound)
    assert 'camfabric_webrtc_viewers{camera="0"} 0.0' in requests.get(gateway.url + "metrics",
                                                                        timeout=5).text


def test_configured_ice_servers_are_offered_as_link_headers(node):
    config = GatewayConfig(port=0, subscribe=(node.endpoint,),
                           ice_servers=("stun:stun.example.org:3478", "turn:turn.example.org"))
    with Gateway(config) as gw:
        answer = requests.options(gw.url + "webrtc/0/whep", timeout=5)
    assert answer.status_code == 204
    assert answer.headers["Link"] == ('<stun:stun.example.org:3478>; rel="ice-server", '
                                      '<turn:turn.example.org>; rel="ice-server"')


@pytest.mark.timeout(90)
def test_with_two_workers_every_session_works_whichever_worker_takes_each_request(node, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{node.endpoint}"]\nworkers = 2\n')
    gateway = subprocess.Popen([sys.executable, "-m", "camfabric.cli", "gateway", "--config",
                                str(config)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.DEVNULL)
    try:
        line = gateway.stdout.readline()
        url = line.split("gateway: ", 1)[1].split()[0]
        deadline = time.monotonic() + 30
        while True:  # both workers up and each has heard of camera 0
            try:
                if all(requests.get(url + "cameras", timeout=5).json() for _ in range(6)):
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the workers never served camera 0"
            time.sleep(0.2)
        for _ in range(4):  # each request on a new connection: either worker may take it
            seen = asyncio.run(view(url + "webrtc/0", seconds=0.5))
            assert (seen.post.status_code, seen.patch.status_code, seen.delete.status_code) == \
                (201, 204, 200)
            assert set(seen.sizes) == {(W, H)}
        assert node.publisher.wait_for_no_subscriber(H264, timeout=RELEASE_AFTER_S + 3)
    finally:
        gateway.terminate()
        gateway.wait(10)
