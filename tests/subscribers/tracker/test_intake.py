"""Frame intake on a real fabric: a camera's frames are subscribed only for its turn, and the
frame detected is one captured after the camera became due (never an old cached one)."""

from __future__ import annotations

import time

import numpy as np

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import Frame, Publisher, encode_jpeg, topics
from camfabric.subscribers.tracker.config import CameraTracking, TrackerConfig
from camfabric.subscribers.tracker.service import Tracker
from tests.conftest import ANY_PORT

JPEG = encode_jpeg(np.full((36, 64, 3), 100, np.uint8))


def _config(node: str, interval_s: float) -> TrackerConfig:
    return TrackerConfig(nodes=[node], publish=ANY_PORT, markers={"20": "cup"},
                         cameras=(CameraTracking(id=1, role="end_effector", interval_s=interval_s),))


def test_frames_are_subscribed_around_the_camera_s_turn_not_continuously(zmq_context):
    """A node that publishes (encodes) only while someone wants its frames: with a 3 s interval
    the tracker wants them a fraction of the time (1 s lead of 3), and still detects every turn."""
    topic = topics.frame(1, "jpeg")
    wanted = samples = published = 0
    with Publisher(ANY_PORT, context=zmq_context) as pub, \
            Tracker(_config(pub.endpoint, 3.0), context=zmq_context) as tracker:
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < 10.0:
            samples += 1
            if pub.wants(topic):
                wanted += 1
                published += 1
                pub.publish(Frame(cam=1, seq=seq, t_capture_ns=time.time_ns(), w=64, h=36,
                                  encoding="jpeg", data=JPEG, node="n"))
                seq += 1
            time.sleep(0.05)
        taken = tracker.workers[1].frames
        calls = tracker.pipelines[1].detector.calls
    assert 3 <= taken <= 4 and calls == taken  # one detection per 3 s turn: at 0, 3, 6 (and 9) s
    assert wanted / samples < 0.2  # subscribed for the turns only (until the frame is in hand)
    assert published < 0.6 * samples


def test_a_frame_captured_long_before_the_turn_is_not_taken(zmq_context):
    """A camera whose only frame is old (a node replaying its cache) gives no detection."""
    with Publisher(ANY_PORT, context=zmq_context) as pub, \
            Tracker(_config(pub.endpoint, 2.0), context=zmq_context) as tracker:
        old = time.time_ns() - 30 * 10**9
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            pub.publish(Frame(cam=1, seq=1, t_capture_ns=old, t_publish_ns=time.time_ns(), w=64, h=36,
                              encoding="jpeg", data=JPEG, node="n"))
            time.sleep(0.1)
        assert tracker.workers[1].frames == 0
        fresh_deadline = time.monotonic() + 5.0
        seq = 2
        while time.monotonic() < fresh_deadline and tracker.workers[1].frames == 0:
            now = time.time_ns()
            pub.publish(Frame(cam=1, seq=seq, t_capture_ns=now, t_publish_ns=now, w=64, h=36,
                              encoding="jpeg", data=JPEG, node="n"))
            seq += 1
            time.sleep(0.1)
        assert tracker.workers[1].frames == 1


def test_a_camera_watched_only_by_the_tracker_is_encoded_at_most_twice_per_turn(zmq_context):
    """A real node, a camera nobody else watches: its own encode counter over 5 turns of 2 s
    is at most two per turn — the frame taken, and one captured while the unsubscription
    travels — where a subscription held ahead of the turn costs the node the camera's frame
    rate for that long."""
    camera = CameraConfig(id=1, name="arm", role="end_effector", resolution=(160, 120), fps=5)
    node = CaptureNode(NodeConfig(name="n", publish="tcp://127.0.0.1:0", cameras=(camera,)),
                       zmq_context).start()
    try:
        counters = node.loops[1].counters
        config = TrackerConfig(nodes=[node.endpoint], publish="tcp://127.0.0.1:0", markers={"20": "cup"},
                               cameras=(CameraTracking(id=1, role="end_effector", interval_s=2.0),))
        with Tracker(config, context=zmq_context) as tracker:
            deadline = time.monotonic() + 30.0
            while tracker.workers[1].frames < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            turns = tracker.workers[1].frames
        time.sleep(0.5)  # an encode still in hand as the tracker stopped is counted too
        encodes = counters["encodes"]
        assert turns >= 5 and counters["frames"] >= 5 * turns
        # the last turn may have subscribed again (its frame not yet taken) as the tracker stopped
        assert encodes <= 2 * (turns + 1), (encodes, turns)
    finally:
        node.stop()
