"""A node with as many cameras as the gateway accepts from one node (64): every camera's
heartbeat reaches every subscriber — the gateway, robot code, and both through a proxy —
although the node sends them together each second into send queues a few messages deep."""

from __future__ import annotations

import time

import falcon.testing
import pytest
import zmq

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import MAX_CAMERAS_PER_NODE, FrameCache
from camfabric.protocol import Meta, Publisher
from camfabric.proxy import FabricProxy, ProxyConfig

from ..gateway.support import wait_until

CAMERAS = MAX_CAMERAS_PER_NODE
WITHIN_S = 5.0  # the contract: every camera shown connected within 5 s of the node starting
HEARTBEAT_TIMEOUT_S = 3.0  # the gateway's default


@pytest.fixture
def node(zmq_context):
    cameras = tuple(CameraConfig(id=cam, resolution=(32, 24), fps=1.0) for cam in range(CAMERAS))
    made = CaptureNode(NodeConfig(name="wide", publish="tcp://127.0.0.1:0", cameras=cameras),
                       zmq_context).start()
    yield made
    made.stop(timeout=10.0)  # 64 cameras' threads, each perhaps still opening its source


def connected_at_gateway(client: falcon.testing.TestClient) -> set[int]:
    status = client.simulate_get("/status").json
    return {int(cam) for cam, state in status.items() if state["connected"]}


def connected_at_subscriber(sub: protocol.Subscriber) -> set[int]:
    return {cam for cam, meta in sub.metas().items() if meta.health.get("connected")}


def all_cameras_stay_connected(endpoint: str, zmq_context, started: float) -> None:
    everyone = set(range(CAMERAS))
    cache = FrameCache(endpoint, context=zmq_context).start()
    try:
        client = falcon.testing.TestClient(create_app(cache))
        with protocol.Subscriber(endpoint, cameras=(), topics_extra=[b"meta/"],
                                 context=zmq_context) as robot:
            wait_until(lambda: connected_at_gateway(client) == everyone
                       and connected_at_subscriber(robot) == everyone,
                       timeout=WITHIN_S - (time.monotonic() - started),
                       what=f"all {CAMERAS} cameras connected at the gateway and the subscriber")
            # …and they stay so: each camera's heartbeat keeps arriving, not one lucky burst.
            # The gateway drops a camera whose heartbeat is older than its timeout.
            deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S + 1.0
            before = {cam: meta.t_receive_ns for cam, meta in robot.metas().items()}
            while time.monotonic() < deadline:
                assert connected_at_gateway(client) == everyone
                time.sleep(0.1)
            renewed = {cam for cam, meta in robot.metas().items()
                       if meta.t_receive_ns > before[cam]}
            assert renewed == everyone
    finally:
        cache.close()


def test_every_camera_of_a_64_camera_node_shows_connected(node, zmq_context):
    all_cameras_stay_connected(node.endpoint, zmq_context, time.monotonic())


def test_every_camera_of_a_64_camera_node_shows_connected_through_a_proxy(node, zmq_context):
    started = time.monotonic()
    with FabricProxy(ProxyConfig(upstream=[node.endpoint], publish="tcp://127.0.0.1:0"),
                     context=zmq_context) as proxy:
        all_cameras_stay_connected(proxy.endpoint, zmq_context, started)


def test_heartbeats_sent_together_arrive_in_the_order_sent(zmq_context):
    # Ten heartbeats published in one go all reach a subscriber, in order: none is lost to the
    # subscriber's full send queue.
    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub, \
            protocol.Subscriber(pub.endpoint, cameras=(), topics_extra=[b"meta/"],
                                context=zmq_context) as sub:
        assert pub.wait_for_subscriber(b"meta/0/", timeout=3)
        arrived: list[int] = []
        sub.add_listener(lambda msg: arrived.append(msg.cam) if isinstance(msg, Meta) else None)
        for cam in range(10):
            assert pub.publish(Meta(cam=cam, node="n", registry={}, health={}))
        wait_until(lambda: len(arrived) >= 10, what="ten heartbeats")
        assert arrived == list(range(10))


def test_a_subscriber_that_reads_nothing_holds_no_one_elses_heartbeats_back(zmq_context):
    # Heartbeats wait for every subscriber's room, but not for one that never reads: after
    # hold_s (0.5 s) it loses them, and the others get theirs.
    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub:
        stuck = zmq_context.socket(zmq.SUB)
        stuck.linger = 0
        stuck.rcvhwm = 1
        stuck.setsockopt(zmq.RCVBUF, 4096)
        stuck.subscribe(b"meta/")
        stuck.connect(pub.endpoint)
        try:
            with protocol.Subscriber(pub.endpoint, cameras=(), topics_extra=[b"meta/"],
                                     context=zmq_context) as healthy:
                assert pub.wait_for_subscriber(b"meta/0/", timeout=3)
                time.sleep(0.5)  # both subscriptions are in
                arrived: list[int] = []
                healthy.add_listener(
                    lambda msg: arrived.append(msg.cam) if isinstance(msg, Meta) else None)
                filler = "x" * 60_000  # the stuck peer's buffers fill within a round or two
                for round_ in range(4):
                    before = len(arrived)
                    started = time.monotonic()
                    for cam in range(CAMERAS):
                        assert pub.publish(Meta(cam=cam, node="n", registry={"description": filler},
                                                health={"round": round_}))
                    wait_until(lambda b=before: len(arrived) - b >= CAMERAS, timeout=5,
                               what=f"round {round_} of heartbeats at the healthy subscriber")
                    print(f"round {round_}: {time.monotonic() - started:.2f} s")
        finally:
            stuck.close(linger=0)
