"""The tracker on a real fabric: a CaptureNode with tabletop cameras -> the tracker -> World on
its own endpoint -> a protocol.Subscriber and the gateway's /world see objects where they are."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import requests

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import Frame, Meta, Publisher, Subscriber, encode_jpeg, topics
from camfabric.protocol.errors import CamfabricError, ConfigError
from camfabric.sim import tabletop
from camfabric.sim.tracker import tabletop_tracker_config
from camfabric.subscribers.tracker.config import CameraTracking, TrackerConfig
from camfabric.subscribers.tracker.service import Tracker
from tests.conftest import ANY_PORT

VIEWS = {0: "overhead", 1: "end_effector", 2: "side_profile"}


def _node(endpoint: str, speed: float = 0.0, fps: float = 10.0) -> NodeConfig:
    cameras = tuple(
        CameraConfig(id=cam, name=view, role=view, resolution=(640, 360), fps=fps,
                     source={"kind": "tabletop", "view": view, "speed": speed})
        for cam, view in VIEWS.items())
    return NodeConfig(name="cell", publish=endpoint, cameras=cameras)


def _wait_world(sub: Subscriber, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        world = sub.message(topics.world())
        if world is not None and predicate(world.model):
            return world.model
        time.sleep(0.05)
    world = sub.message(topics.world())
    raise AssertionError(f"no matching world model within {timeout} s; last: "
                         f"{None if world is None else world.model}")


def _complete(model) -> bool:
    objects = model["objects"]
    return (len(objects) == 3 and all(o["observations"] >= 4 for o in objects)
            and all(o["position_mm"]["z"] > 0 for o in objects))


def test_objects_are_published_near_their_true_positions(zmq_context):
    with CaptureNode(_node(ANY_PORT), context=zmq_context) as node, \
            Tracker(tabletop_tracker_config([node.endpoint], ANY_PORT, VIEWS, interval_s=0.3),
                    context=zmq_context) as tracker, \
            Subscriber(tracker.endpoint, cameras=[], topics_extra=[topics.world(), topics.status("tracker")],
                       context=zmq_context) as sub:
        model = _wait_world(sub, _complete, timeout=15.0)
        assert model["frame"] == "workspace"
        truth = {b.label: (*box_xy(b), b.height_mm) for b in tabletop.BOXES}
        for obj in model["objects"]:
            x, y, z = truth[obj["label"]]
            p = obj["position_mm"]
            assert math.hypot(p["x"] - x, p["y"] - y) < 5.0, obj
            assert abs(p["z"] - z) < 10.0, obj
            assert set(obj["pixel"]) == {"0", "2"} and not obj["stale"]
        ee = model["camera_frames"]["1"]
        assert ee["frame"] == "end_effector" and ee["detections"]
        assert all(d["frame"] == "end_effector" and "position_mm" not in d for d in ee["detections"])
        cams = _wait_status(sub, lambda c: c["0"]["calibrated"] and c["2"]["calibrated"], 3.0)
        assert set(cams) == {"0", "1", "2"}
        assert [cams[c]["role"] for c in ("0", "1", "2")] == ["overhead", "end_effector", "side_profile"]
        assert cams["0"]["detections"] >= 3 and cams["0"]["calls"] >= 1
        assert cams["0"]["next_allowed"] is not None and cams["0"]["last_detection"] is not None


def _wait_status(sub: Subscriber, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sub.message(topics.status("tracker"))
        if status is not None and predicate(status.state["cameras"]):
            return status.state["cameras"]
        time.sleep(0.05)
    raise AssertionError(f"no matching tracker status within {timeout} s")


def box_xy(box: tabletop.TaggedBox) -> tuple[float, float]:
    x, y, _ = tabletop.box_pose(box, 0.0)  # speed 0: the scene stands at t = 0
    return x, y


def test_gateway_serves_the_tracker_world(zmq_context):
    gateway = pytest.importorskip("camfabric.gateway.server")
    from camfabric.gateway.config import GatewayConfig

    node_config = NodeConfig(name="cell", publish=ANY_PORT, cameras=(CameraConfig(
        id=0, role="overhead", fps=10, source={"kind": "tabletop", "view": "overhead", "speed": 0.0}),))
    with CaptureNode(node_config, context=zmq_context) as node, \
            Tracker(tabletop_tracker_config([node.endpoint], ANY_PORT, {0: "overhead"}, interval_s=0.3),
                    context=zmq_context) as tracker, \
            gateway.Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,), tracker=(tracker.endpoint,)),
                            context=zmq_context) as gw:
        deadline = time.monotonic() + 10
        body = {}
        while time.monotonic() < deadline:
            body = requests.get(gw.url + "world", timeout=2).json()
            if len(body.get("objects", [])) == 3:
                break
            time.sleep(0.2)
        assert {o["label"] for o in body["objects"]} == {b.label for b in tabletop.BOXES}
        assert body["frame"] == "workspace" and "age_s" in body


def test_gemini_without_a_key_is_a_config_error_naming_where_to_put_it():
    config = TrackerConfig(cameras=(CameraTracking(id=1, role="end_effector", detector="gemini"),))
    with pytest.raises(ConfigError) as err:
        Tracker(config, environ={})
    assert err.value.path == "tracker.gemini.api_key"
    assert "GEMINI_API_KEY" in str(err.value)


def test_a_camera_whose_node_role_differs_is_warned_about(zmq_context, caplog):
    jpeg = encode_jpeg(np.full((36, 64, 3), 100, np.uint8))
    with Publisher(ANY_PORT, context=zmq_context) as pub, \
            Tracker(TrackerConfig(nodes=[pub.endpoint], publish=ANY_PORT, markers={"20": "cup"},
                                  cameras=(CameraTracking(id=1, role="end_effector"),)),
                    context=zmq_context), \
            caplog.at_level("WARNING"):
        deadline = time.monotonic() + 5
        seq = 0
        while time.monotonic() < deadline and "registry" not in caplog.text:
            pub.publish(Meta(cam=1, node="n", registry={"id": 1, "role": "side_profile"}, health={}))
            pub.publish(Frame(cam=1, seq=seq, t_capture_ns=time.time_ns(), w=64, h=36, encoding="jpeg",
                              data=jpeg, node="n"))
            seq += 1
            time.sleep(0.05)
    warned = [r.getMessage() for r in caplog.records if "registry" in r.getMessage()]
    assert len(warned) == 1 and "'side_profile'" in warned[0] and "'end_effector'" in warned[0]


def test_a_publish_endpoint_in_use_is_a_clear_error(zmq_context, ipc_endpoint):
    with Publisher(ANY_PORT, context=zmq_context) as taken:
        config = TrackerConfig(nodes=[ipc_endpoint], publish=taken.endpoint, markers={"20": "cup"},
                               cameras=(CameraTracking(id=1, role="end_effector"),))
        with pytest.raises(CamfabricError) as err:
            Tracker(config, context=zmq_context).start()
    assert taken.endpoint in str(err.value)
