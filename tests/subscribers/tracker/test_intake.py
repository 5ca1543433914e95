"""Frame intake on a real fabric: a camera's frames are subscribed only around its turn, and
the frame detected is one captured after the camera became due (never an old cached one)."""

from __future__ import annotations

import time

import numpy as np

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
    assert wanted / samples < 0.6  # subscribed around the turns only (1 s lead + the frame)
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
