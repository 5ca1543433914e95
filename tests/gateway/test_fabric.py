"""The gateway as a member of the fabric: heartbeats, duplicate camera ids, real capture nodes
killed and restarted, two gateways on one node."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest
import requests

from camfabric.capture_node.config import NodeConfig, demo_cameras
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Frame, FrameTimeout, Publisher, Status, decode_jpeg, encode

from ..conftest import ANY_PORT
from .support import FakeNode, announce, deliver, jpeg_of, settle, wait_until

SECOND = 10**9


class FakeClock:
    """A monotonic clock the test moves by hand; the subscriber stamps arrivals with it."""

    def __init__(self) -> None:
        self.now = time.monotonic_ns()

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clocked(zmq_context, node):
    """A cache on a clock the test moves by hand (no watchdog), with a client of its app."""
    clock = FakeClock()
    cache = FrameCache(node.endpoint, context=zmq_context, clock=clock, watchdog=False,
                       services=[node.endpoint]).start()
    yield cache, falcon.testing.TestClient(create_app(cache)), clock
    cache.close()


def test_a_camera_is_disconnected_after_its_heartbeat_stops_for_three_seconds(
        node, clocked, caplog):
    cache, client, clock = clocked
    announce(node, cache, 0)
    settle(cache)
    assert client.simulate_get("/status").json["0"]["connected"] is True
    clock.now += int(2.9 * SECOND)
    assert client.simulate_get("/status").json["0"]["connected"] is True
    clock.now += int(0.2 * SECOND)
    with caplog.at_level(logging.WARNING, logger="camfabric.gateway.cache"):
        assert client.simulate_get("/status").json["0"]["connected"] is False
        cache.check()
    assert sum("disconnected" in r.getMessage() for r in caplog.records) == 1
    started = time.monotonic()
    snap = client.simulate_get("/snap/0")  # no waiting on a camera that is gone
    assert snap.status_code == 503 and "disconnected" in snap.json["description"]
    assert time.monotonic() - started < 0.5
    node.meta(0)  # the heartbeat returns (stamped with the moved clock)
    wait_until(lambda: client.simulate_get("/status").json["0"]["connected"], what="reconnected")


def test_frames_keep_a_camera_connected_when_heartbeats_are_lost(node, clocked):
    # Under load a small receive queue may drop heartbeats along with frames; a camera whose
    # frames still arrive is not disconnected.
    cache, client, clock = clocked
    announce(node, cache, 0)
    settle(cache)
    for _ in range(3):
        clock.now += int(2.0 * SECOND)
        before = cache.subscriber.stats.received
        node.frame(0)  # a frame, no heartbeat
        wait_until(lambda b=before: cache.subscriber.stats.received > b, what="the frame")
        assert client.simulate_get("/status").json["0"]["connected"] is True
    clock.now += int(3.1 * SECOND)  # then nothing at all
    assert client.simulate_get("/status").json["0"]["connected"] is False


def test_a_service_that_stops_reporting_is_marked_so_in_status(node, clocked):
    cache, client, clock = clocked
    announce(node, cache, 0)
    node.publisher.publish(Status(service="prusa_connect",
                                  state={"cameras": {"0": {"state": "ok", "uploads": 3}}}))
    wait_until(lambda: "prusa_connect" in client.simulate_get("/status").json["0"]["health"],
               what="the uploader's state")
    settle(cache)
    assert client.simulate_get("/status").json["0"]["health"]["prusa_connect"]["reporting"] is True
    clock.now += 11 * SECOND  # the uploader crashed: no more status messages
    node.meta(0)
    wait_until(lambda: client.simulate_get("/status").json["0"]["connected"], what="heartbeat")
    shown = client.simulate_get("/status").json["0"]["health"]["prusa_connect"]
    assert shown["reporting"] is False and shown["status_age_s"] >= 10
    assert shown["uploads"] == 3  # the last state it reported stays visible


def test_a_duplicate_camera_id_is_shown_and_never_merged(zmq_context, make_cache, caplog):
    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub_a, \
            Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub_b:
        a, b = FakeNode(pub_a, "node-a"), FakeNode(pub_b, "node-b")
        cache = make_cache(a.endpoint)
        deliver(a, cache, 0, value=20)
        cache.subscriber.close()  # start over, subscribed to both nodes
        with caplog.at_level(logging.ERROR, logger="camfabric.gateway.cache"):
            cache = make_cache(a.endpoint, b.endpoint)
            deliver(a, cache, 0, value=20)
            pub_b.wait_for_subscriber(b"meta/0/")
            wait_until(lambda: (b.meta(0), a.meta(0), "duplicate" in cache.status()["0"])[-1],
                       what="the duplicate reported")
            for _ in range(5):  # more heartbeats of both: the conflict is logged once
                before = cache.subscriber.stats.received
                a.meta(0)
                b.meta(0)
                wait_until(lambda before=before: cache.subscriber.stats.received >= before + 2)
            pub_b.wait_for_subscriber(b"frame/0/jpeg")
            for i in range(5):  # node-b's frames arrive, and are counted, not served
                wait_until(lambda i=i: b.frame(0, value=240) or cache.status()["0"]["duplicate"]
                           ["ignored_frames"] > i, what="node-b's frame received")
            deliver(a, cache, 0, value=20)
        client = falcon.testing.TestClient(create_app(cache))
        status = client.simulate_get("/status").json["0"]
        assert status["duplicate"]["nodes"] == ["node-a", "node-b"]
        assert status["duplicate"]["serving"] == "node-a" and status["node"] == "node-a"
        assert "claimed by 2 nodes" in status["duplicate"]["message"]
        image = decode_jpeg(client.simulate_get("/latest/0").content)
        assert abs(int(image.mean()) - 20) <= 2  # node-b's frames are never served
        conflicts = [r for r in caplog.records if "claimed by 2 nodes" in r.getMessage()]
        assert len(conflicts) == 1  # logged once per change, not once per heartbeat


def node_config(endpoint: str, name: str = "cell") -> NodeConfig:
    return NodeConfig(name=name, publish=endpoint, cameras=demo_cameras(160, 120, 15))


def test_end_to_end_through_a_capture_node(zmq_context, make_gateway):
    with CaptureNode(node_config(ANY_PORT), context=zmq_context) as node:
        gw = make_gateway(node.endpoint)
        wait_until(lambda: len(gw.cache.camera_ids()) == 3, timeout=5, what="three cameras")
        cameras = requests.get(gw.url + "cameras", timeout=5).json()
        assert [cameras[k]["role"] for k in ("0", "1", "2")] == ["overhead", "end_effector",
                                                                 "side_profile"]
        before = time.time()
        snap = requests.get(gw.url + "snap/1", timeout=5)
        assert snap.status_code == 200 and float(snap.headers["X-Timestamp"]) > before
        assert decode_jpeg(snap.content).shape == (120, 160, 3)
        wait_until(lambda: gw.cache.latest(2), what="a frame of camera 2")
        latest = requests.get(gw.url + "latest/2", timeout=5)
        assert latest.status_code == 200 and int(latest.headers["X-Frame-Age-Ms"]) < 1000
        wait_until(lambda: all(s["connected"] for s in requests.get(gw.url + "status", timeout=5)
                               .json().values()), what="every camera connected")


def test_two_gateways_on_one_node(zmq_context, make_gateway):
    with CaptureNode(node_config(ANY_PORT), context=zmq_context) as node:
        first, second = make_gateway(node.endpoint), make_gateway(node.endpoint)
        for gw in (first, second):
            wait_until(lambda gw=gw: gw.cache.latest(0) if 0 in gw.cache.camera_ids() else None,
                       timeout=5, what="a frame at each gateway")
        for gw in (first, second):
            assert requests.get(gw.url + "latest/0", timeout=5).status_code == 200
            assert requests.get(gw.url + "snap/0", timeout=5).status_code == 200


def start_node_process(endpoint: str) -> subprocess.Popen:
    """`camfabric node` with its three demo cameras, as a separate process (on an ipc endpoint:
    a restarted node binds where it was, which a port picked free earlier cannot promise)."""
    return subprocess.Popen([sys.executable, "-m", "camfabric.cli", "node", "--publish", endpoint,
                             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def connected(gw, cam: int = 0) -> bool:
    return requests.get(gw.url + "status", timeout=5).json().get(str(cam), {}).get("connected", False)


@pytest.mark.timeout(30)
def test_a_killed_node_is_reported_and_served_again_after_restart(ipc_endpoint, make_gateway):
    gw = make_gateway(ipc_endpoint)
    node = start_node_process(ipc_endpoint)
    try:
        wait_until(lambda: connected(gw) and gw.cache.latest(0), timeout=8, what="the node serving")
        node.kill()  # SIGKILL: no goodbye on the fabric, the heartbeat just stops
        node.wait(5)
        killed = time.monotonic()
        wait_until(lambda: not connected(gw), timeout=4.0, what="camera 0 reported disconnected")
        assert time.monotonic() - killed <= 3.5
        assert requests.get(gw.url + "latest/0", timeout=5).status_code == 503  # never shown as live

        restarted = time.time()
        node = start_node_process(ipc_endpoint)  # where it was: the gateway is not told
        wait_until(lambda: connected(gw), timeout=8.0, what="camera 0 connected again")
        snap = requests.get(gw.url + "snap/0", timeout=5)
        assert snap.status_code == 200 and float(snap.headers["X-Timestamp"]) > restarted
        latest = requests.get(gw.url + "latest/0", timeout=5)
        assert float(latest.headers["X-Timestamp"]) > restarted
    finally:
        node.kill()
        node.wait(5)


# -- subscriptions on demand ------------------------------------------------------------------

def node_encodes(cache: FrameCache, cam: int = 0) -> int:
    """The camera's JPEG encodes so far, as its node's newest heartbeat reports them."""
    meta = cache.subscriber.meta(cam)
    return -1 if meta is None else meta.health["encodes"]


def test_a_gateway_nobody_asks_makes_the_node_encode_nothing_until_a_request(
        zmq_context, make_cache):
    cameras = demo_cameras(320, 240, 15)[:1]
    with CaptureNode(NodeConfig(name="n", publish=ANY_PORT, cameras=cameras), zmq_context) as node:
        cache = make_cache(node.endpoint, idle_s=1.0)
        client = falcon.testing.TestClient(create_app(cache, GatewayConfig(snap_timeout_s=2.0)))
        wait_until(lambda: node_encodes(cache) >= 0, timeout=5, what="the node's heartbeat")
        time.sleep(3.0)  # a gateway with no HTTP client at all, three idle periods long
        assert node_encodes(cache) == 0 and node.loops[0].counters["frames"] > 30

        asked = time.monotonic()
        resp = client.simulate_get("/latest/0")
        assert resp.status_code == 200 and time.monotonic() - asked < 2.0
        assert int(resp.headers["X-Frame-Age-Ms"]) < 1000  # a fresh frame, not a cached one
        assert decode_jpeg(resp.content).shape == (240, 320, 3)
        wait_until(lambda: node_encodes(cache) > 0, timeout=3, what="the encodes in a heartbeat")

        # Nobody asks again: after the idle period the node stops encoding.
        assert node.publisher.wait_for_no_subscriber(b"frame/0/jpeg", timeout=5)
        time.sleep(1.5)  # heartbeats in flight
        stopped = node_encodes(cache)
        time.sleep(1.5)
        assert node_encodes(cache) == stopped


def test_a_stream_keeps_its_camera_subscribed_and_snap_after_idle_is_fresh(
        zmq_context, make_cache):
    cameras = demo_cameras(160, 120, 15)[:1]
    with CaptureNode(NodeConfig(name="n", publish=ANY_PORT, cameras=cameras), zmq_context) as node:
        cache = make_cache(node.endpoint, idle_s=0.5)
        wait_until(lambda: 0 in cache.camera_ids(), timeout=5, what="camera 0 announced")
        with cache.watching(0):
            first = cache.wait_newer(0, None, timeout=3)
            time.sleep(1.0)  # longer than idle_s: held by the open stream
            assert cache.wanted() == [0] and node.publisher.wants(b"frame/0/jpeg")
            assert cache.wait_newer(0, first, timeout=2) is not None
        assert node.publisher.wait_for_no_subscriber(b"frame/0/jpeg", timeout=5)
        asked = cache.clock()
        frame = cache.snap(0, timeout=2.0, requested_ns=asked)
        assert frame.age_ns(cache.clock()) < SECOND


def test_a_frame_delayed_in_flight_is_old_to_the_cache_and_to_snap(cache, node):
    """As after a partition: a frame captured a minute ago arrives now, behind a link whose
    usual transit the heartbeats and frames before it established."""
    announce(node, cache)
    for value in (10, 20, 30):
        deliver(node, cache, value=value)
    old = time.time_ns() - 60 * SECOND
    late = Frame(cam=0, seq=99, t_capture_ns=old, w=64, h=48, encoding="jpeg",
                 data=jpeg_of(200), node=node.name, frame_id="f")
    asked = cache.clock()
    node.publisher.publish_parts(encode(late, t_publish_ns=old), cache=False)
    wait_until(lambda: cache.latest(0).seq == 99, what="the delayed frame")
    assert cache.latest(0).age_ns(cache.clock()) > 59 * SECOND
    assert cache.status()["0"]["health"]["gateway"]["frame_age_ms"] > 59_000
    with pytest.raises(FrameTimeout):  # not "captured after the request"
        cache.snap(0, timeout=0.5, requested_ns=asked)


def test_requests_arriving_together_after_idle_all_wait_for_the_fresh_frame(
        zmq_context, make_cache):
    # Only the first request after an idle time subscribes the camera; the ones that arrive
    # before its first fresh frame must wait for that frame too, not answer 503.
    cameras = demo_cameras(160, 120, 15)[:1]
    with CaptureNode(NodeConfig(name="n", publish=ANY_PORT, cameras=cameras), zmq_context) as node:
        cache = make_cache(node.endpoint, idle_s=10.0, wake_timeout_s=5.0)
        client = falcon.testing.TestClient(create_app(cache, GatewayConfig(snap_timeout_s=2.0)))
        wait_until(lambda: 0 in cache.camera_ids() and cache.view(0).connected, timeout=5,
                   what="camera 0 announced")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.simulate_get("/latest/0"), range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert all(int(a.headers["X-Frame-Age-Ms"]) < 2000 for a in answers)
