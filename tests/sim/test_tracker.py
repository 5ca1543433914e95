"""The tracker's part of `camfabric demo`: tabletop cameras on a node, the demo tracker, /world."""

from __future__ import annotations

import math
import re
import time
from contextlib import ExitStack

from camfabric.capture_node.config import NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import Subscriber, topics
from camfabric.sim import tabletop
from camfabric.sim.tracker import start_demo_tracker, tabletop_cameras
from tests.conftest import ANY_PORT, ENDPOINT


def test_demo_cameras_and_tracker_put_the_moving_boxes_on_the_world(zmq_context):
    cameras = tabletop_cameras(640, 360, fps=10)
    assert [(c.id, c.role, c.source["view"]) for c in cameras] == [
        (0, "overhead", "overhead"), (1, "end_effector", "end_effector"), (2, "side_profile", "side_profile")]
    with ExitStack() as stack:  # the way `camfabric demo` holds its parts
        node = stack.enter_context(CaptureNode(NodeConfig(name="demo", publish=ANY_PORT, cameras=cameras),
                                               context=zmq_context))
        tracker = stack.enter_context(start_demo_tracker(node.endpoint, ANY_PORT, context=zmq_context))
        assert re.fullmatch(ENDPOINT, tracker.endpoint)  # the port it got, not port 0
        sub = stack.enter_context(Subscriber(tracker.endpoint, cameras=[], topics_extra=[topics.world()],
                                             context=zmq_context))
        deadline = time.monotonic() + 8
        model = None
        while time.monotonic() < deadline:
            msg = sub.message(topics.world())
            model = msg.model if msg else None
            if model and len(model["objects"]) == 3:
                break
            time.sleep(0.1)
        assert model is not None and len(model["objects"]) == 3, model
        for obj in model["objects"]:
            box = next(b for b in tabletop.BOXES if b.label == obj["label"])
            x, y, _ = tabletop.box_pose(box, obj["last_seen"])  # moving at about 10 mm/s
            assert math.hypot(obj["position_mm"]["x"] - x, obj["position_mm"]["y"] - y) < 30.0
