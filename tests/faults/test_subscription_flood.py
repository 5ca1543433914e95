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


def measure_flood(endpoint: str, context: zmq.Context, fps: float, window_s: float) -> dict:
    """Delivered fps of one camera before, during and after a 20 000-topic flood, with what
    the node's publisher kept and ignored (also run by benchmarks/faults.py)."""
    config = NodeConfig(name="cell", publish=endpoint, cameras=(
        CameraConfig(id=0, fps=fps, resolution=(160, 120)),))
    with CaptureNode(config, context=context) as node, \
            protocol.Subscriber(node.endpoint, cameras=[0], context=context) as sub:
        sub.latest(0, timeout=10)
        before = delivered_fps(sub, window_s)
        flooder = context.socket(zmq.SUB)
        flooder.linger = 0
        flooder.sndhwm = 0  # every one of the 20 000 reaches the node, none dropped on the way
        flooder.connect(node.endpoint)
        for i in range(FLOOD):
            flooder.subscribe(b"flood/%d/" % i)
        during = delivered_fps(sub, window_s)
        kept = len(node.publisher.subscriptions)
        flooder.close(linger=0)  # leaving: 20 000 unsubscriptions
        after = delivered_fps(sub, window_s)
        return {"before": before, "during": during, "after": after, "kept": kept,
                "ignored": node.publisher.ignored_subscriptions,
                "cap": node.publisher.max_subscriptions}


def test_a_subscription_flood_keeps_90_percent_of_a_cameras_fps(tcp_endpoint, zmq_context):
    run = measure_flood(tcp_endpoint, zmq_context, fps=10, window_s=WINDOW_S)
    before, during, after = run["before"], run["during"], run["after"]
    assert before >= 5, f"baseline {before} fps: the machine is too loaded to judge"
    assert during >= 0.9 * before, run
    assert after >= 0.9 * before, run
    # The flood was bounded: beyond the cap, unknown topics were logged and ignored.
    assert run["ignored"] >= FLOOD - run["cap"]
    assert run["kept"] <= run["cap"] + 16
