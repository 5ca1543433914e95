"""The world model estimated at the reader's moment, over a real fabric: the tracker's model on
the `world` topic, read by the gateway's cache (what `GET /world` answers) and by robot code
(`World.objects()`, `obj.at(t_ns)`), each on its own clock — the tracker's wall clock an hour
off changes nothing, because no reader compares it with its own."""

from __future__ import annotations

import time

import falcon.testing
import pytest
import zmq

from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Publisher, Subscriber, World, encode, topics
from camfabric.protocol.world import model_at
from camfabric.subscribers.tracker.config import CameraTracking, TrackerConfig, WorldConfig
from camfabric.subscribers.tracker.service import Tracker
from camfabric.subscribers.tracker.world import PlaneSighting, WorldModel
from tests.gateway.support import wait_until

M0 = 500.0  # the tracker's monotonic clock
HOUR = 3600.0


class ReaderClock:
    """The reader's monotonic clock in ns, moved by the test."""

    def __init__(self) -> None:
        self.ns = 7_000 * 10**9

    def __call__(self) -> int:
        return self.ns


def _tracker_model(wall_offset_s: float) -> tuple[dict, int]:
    """A box at 10 mm/s along x, detected every 2 s up to t = 10 (x = 200); the model as the
    tracker publishes it 0.5 s after that detection, and its publish stamp — on a tracker
    whose wall clock is `wall_offset_s` off the reader's."""
    wall0 = time.time() + wall_offset_s
    world = WorldModel(WorldConfig(stale_s=8.0))
    for k in range(6):
        t = 2.0 * k
        world.observe_plane("0", [PlaneSighting("box", (100.0 + 10.0 * t, 50.0), (0.0, 0.0))],
                            M0 + t, wall0 + t)
    model = world.snapshot(M0 + 10.5, wall0 + 10.5)
    return model, int((wall0 + 10.5) * 1e9)


@pytest.mark.parametrize("offset", [0.0, HOUR, -HOUR])
def test_get_world_carries_each_object_on_to_the_moment_of_the_request(offset):
    context = zmq.Context()
    clock = ReaderClock()
    model, t_publish_ns = _tracker_model(offset)
    try:
        with Publisher("tcp://127.0.0.1:0", context=context) as node, \
                Publisher("tcp://127.0.0.1:0", context=context) as tracker:
            # Published once, before the gateway subscribes: it reaches the gateway from the
            # tracker's last-value cache, re-stamped by the time it waited there.
            tracker.publish_parts(encode(World(model=model, source="tracker"), t_publish_ns))
            cache = FrameCache([node.endpoint], tracker=[tracker.endpoint], context=context,
                               clock=clock).start()
            try:
                client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
                wait_until(lambda: cache.world()["objects"], what="the world model")
                received = cache.tracker.message(topics.world())  # at 7000 s of the reader's clock
                waited = (received.t_publish_ns - t_publish_ns) / 1e9  # in the tracker's cache
                assert 0 <= waited < 5
                answers = {}
                for later in (0.0, 1.0, 2.5):
                    clock.ns = 7_000 * 10**9 + int(later * 1e9)
                    answers[later] = client.simulate_get("/world").json
                    (obj,) = answers[later]["objects"]
                    # 0.5 s from the detection to the model's moment, the wait in the tracker's
                    # cache (its clock), the wait since receipt (the reader's): at 10 mm/s
                    age = 0.5 + waited + later
                    assert obj["position_mm"]["x"] == pytest.approx(200.0 + 10.0 * age, abs=0.05)
                    assert obj["measured_mm"]["x"] == 200.0
                    assert obj["measured_age_s"] == pytest.approx(age, abs=2e-3)
                    assert obj["uncertainty_mm"] > 0 and obj["stale"] is False
                # an HTTP reader carries an answer on by itself: 1.5 s after the 1.0 s one
                (carried,) = model_at(answers[1.0], 1.5)["objects"]
                (asked,) = answers[2.5]["objects"]
                assert carried["position_mm"] == pytest.approx(asked["position_mm"], abs=0.02)
                assert carried["uncertainty_mm"] == pytest.approx(asked["uncertainty_mm"], abs=0.02)
                clock.ns = 7_000 * 10**9 + int(8.0 * 1e9)  # over 8.5 s after the detection
                (obj,) = client.simulate_get("/world").json["objects"]
                assert obj["stale"] is True
            finally:
                cache.close()
    finally:
        context.destroy(linger=0)


def test_robot_code_evaluates_an_object_at_any_moment_of_its_own_clock():
    context = zmq.Context()
    model, _ = _tracker_model(HOUR)
    try:
        with Publisher("tcp://127.0.0.1:0", context=context) as pub, \
                Subscriber(pub.endpoint, cameras=[], topics_extra=[topics.world()], context=context) as sub:
            msg = wait_until(lambda: pub.publish(World(model=model, source="tracker"))
                        and sub.message(topics.world()), what="the world model")
            assert isinstance(msg, World)
            (box,) = msg.objects()
            assert box.label == "box"
            now = msg.t_receive_ns  # the moment it arrived, on this process's monotonic clock
            here = box.at(now + 1_500_000_000)
            # the tracker's 0.5 s wait is carried from `updated` to the publish stamp (its own
            # clock), the 1.5 s on ours: 2 s past the detection at x = 200
            assert here.x == pytest.approx(220.0, abs=0.5) and here.y == pytest.approx(50.0, abs=0.01)
            assert here.age_s == pytest.approx(2.0, abs=0.5) and not here.stale
            assert box.at(now + 9 * 10**9).stale
            later = msg.at(now + 1_500_000_000)["objects"][0]
            assert later["position_mm"]["x"] == pytest.approx(here.x, abs=0.01)
    finally:
        context.destroy(linger=0)


class SteppedWall:
    """This host's monotonic clock, and a wall clock an hour ahead of the system's."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time() + HOUR

    def wall_ns(self) -> int:
        return int(self.wall() * 1e9)


def test_the_tracker_stamps_its_model_and_the_message_from_one_clock():
    """`updated` and `t_publish_ns` are read from the tracker's own clock together, so the
    reader's `(t_publish_ns - updated)` is the tracker's wait, whatever clock it was given."""
    context = zmq.Context()
    try:
        with Publisher("tcp://127.0.0.1:0", context=context) as node:
            config = TrackerConfig(nodes=[node.endpoint], publish="tcp://127.0.0.1:0", markers={"20": "cup"},
                                   cameras=(CameraTracking(id=1, role="end_effector"),))
            with Tracker(config, context=context, clock=SteppedWall()) as tracker, \
                    Subscriber(tracker.endpoint, cameras=[], topics_extra=[topics.world()],
                               context=context) as sub:
                msg = wait_until(lambda: sub.message(topics.world()), timeout=5, what="the world model")
        assert msg.model["updated"] > time.time() + HOUR - 60
        # the wait (if any) in the tracker's last-value cache before this late joiner got it
        assert 0 <= msg.t_publish_ns - int(msg.model["updated"] * 1e9) < 5 * 10**9
    finally:
        context.destroy(linger=0)
