"""A client subscribing to 20 000 distinct topics does not stall a node: the camera's
delivered fps stays at 90 % or more during the flood and after the client leaves."""

from __future__ import annotations

import time

import zmq

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode

FLOOD = 20_000
WINDOW_S = 3.0


def delivered_fps(sub: protocol.Subscriber, seconds: float) -> float:
    """Frames a consumer gets per second over `seconds` (new captures only)."""
    frames = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sub.poll(timeout=left) is not None:
            frames += 1
    return frames / seconds


def test_a_subscription_flood_keeps_90_percent_of_a_cameras_fps(tcp_endpoint, zmq_context):
    config = NodeConfig(name="cell", publish=tcp_endpoint, cameras=(
        CameraConfig(id=0, fps=10, resolution=(160, 120)),))
    with CaptureNode(config, context=zmq_context) as node, \
            protocol.Subscriber(node.endpoint, cameras=[0], context=zmq_context) as sub:
        sub.latest(0, timeout=10)
        before = delivered_fps(sub, WINDOW_S)

        flooder = zmq_context.socket(zmq.SUB)
        flooder.linger = 0
        flooder.sndhwm = 0  # every one of the 20 000 reaches the node, none dropped on the way
        flooder.connect(node.endpoint)
        for i in range(FLOOD):
            flooder.subscribe(b"flood/%d/" % i)
        during = delivered_fps(sub, WINDOW_S)
        flooder.close(linger=0)  # leaving: 20 000 unsubscriptions
        after = delivered_fps(sub, WINDOW_S)

        assert before >= 5, f"baseline {before} fps: the machine is too loaded to judge"
        assert during >= 0.9 * before, (before, during, after)
        assert after >= 0.9 * before, (before, during, after)
        # The flood was bounded: beyond the cap, unknown topics were logged and ignored.
        assert node.publisher.ignored_subscriptions >= FLOOD - node.publisher.max_subscriptions
        assert len(node.publisher.subscriptions) <= node.publisher.max_subscriptions + 16
