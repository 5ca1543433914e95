"""Valid-looking messages cannot break the gateway: heartbeat fields are type-checked, the
cameras are capped, topics are taken only from the endpoints configured for them, and the
configured owner of a camera is the one served."""

from __future__ import annotations

import logging
import time

import falcon.testing
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Meta, Publisher, Scan, Status, World, decode_jpeg, encode

from ..gateway.support import FakeNode, announce, deliver, wait_until


@pytest.fixture
def make_cache(zmq_context):
    caches: list[FrameCache] = []

    def make(*endpoints: str, **kwargs) -> FrameCache:
        caches.append(FrameCache(list(endpoints), context=zmq_context, **kwargs).start())
        return caches[-1]

    yield make
    for cache in caches:
        cache.close()


@pytest.fixture
def publishers(zmq_context):
    pubs = [Publisher("tcp://127.0.0.1:0", context=zmq_context).start() for _ in range(2)]
    yield pubs
    for pub in pubs:
        pub.stop()


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def raw_meta(cam: int, registry: dict, health: dict | None = None) -> list[bytes]:
    """A heartbeat as a buggy or hostile node would send it, past our own encoder's checks."""
    parts = encode(Meta(cam=cam, node="node-a", registry={}, health={}))
    header = msgpack.unpackb(parts[1]) | {"registry": registry, "health": health or {}}
    return [parts[0], msgpack.packb(header, use_bin_type=True)]


@pytest.mark.parametrize("registry", [
    {"id": 1, "resolution": 5},
    {"id": 1, "name": b"\x00binary"},
    {"id": 1, "resolution": [640, 480], "mount": {"deep": nested(40)}},
])
def test_a_bad_heartbeat_field_leaves_status_and_cameras_answering_for_every_camera(
        publishers, make_cache, registry):
    node = FakeNode(publishers[0], "node-a")
    cache = make_cache(node.endpoint)
    client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
    deliver(node, cache, 0)
    publishers[0].wait_for_subscriber(b"meta/1/")
    for _ in range(3):
        publishers[0].publish_parts(raw_meta(1, registry), cache=False)
    wait_until(lambda: cache.subscriber.stats.malformed >= 3, what="the bad heartbeats counted")
    for route in ("/status", "/cameras"):
        answer = client.simulate_get(route)
        assert answer.status_code == 200, answer.text
        assert "0" in answer.json and "1" not in answer.json


def test_fifty_thousand_made_up_cameras_are_capped_with_one_log_line(publishers, make_cache, caplog):
    pub = publishers[0]
    cache = make_cache(pub.endpoint, max_cameras=100)
    pub.wait_for_subscriber(b"meta/0/")
    with caplog.at_level(logging.INFO):
        for cam in range(50_000):
            pub.publish(Meta(cam=cam, node=f"n{cam // 50}", registry={"id": cam}, health={}))
            if cam % 200 == 0:
                time.sleep(0.005)  # let the socket thread keep up; drops are fine too
        # The gateway ignores cameras beyond its cap; its subscriber stops listening to new
        # camera ids altogether beyond its own (larger) cap.
        wait_until(lambda: cache.ignored_cameras > 500, timeout=10, what="cameras ignored")
    status = falcon.testing.TestClient(create_app(cache, GatewayConfig())).simulate_get("/status")
    assert status.status_code == 200 and len(status.json) == 100
    assert len(status.content) < 100_000
    caps = [r for r in caplog.records if "the most this gateway keeps" in r.getMessage()]
    assert len(caps) == 1
    assert len(caplog.records) < 500  # a few per admitted camera, not one per made-up one


def test_one_node_cannot_announce_more_than_its_share(publishers, make_cache):
    pub = publishers[0]
    cache = make_cache(pub.endpoint, max_cameras_per_node=4)
    assert pub.wait_for_subscriber(b"meta/0/")
    # Ten heartbeats sent together all arrive, in order (a node's heartbeats are never lost to
    # a full send queue): the first four are admitted, the other six refused.
    for cam in range(10):
        assert pub.publish(Meta(cam=cam, node="greedy", registry={}, health={}))
    wait_until(lambda: cache.ignored_cameras >= 6, what="the cap")
    assert cache.camera_ids() == [0, 1, 2, 3]
    assert cache.ignored_cameras >= 6


def test_a_process_on_the_trackers_port_cannot_publish_a_camera(publishers, make_cache):
    node = FakeNode(publishers[0], "cell")
    impostor = FakeNode(publishers[1], "cell")  # binds the tracker's port, claims camera 0
    cache = make_cache(node.endpoint, tracker=[impostor.endpoint])
    client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
    deliver(node, cache, 0, value=30)
    publishers[1].wait_for_subscriber(b"world")
    time.sleep(0.3)
    for _ in range(20):
        impostor.meta(0)
        impostor.meta(5)
        impostor.frame(0, value=220)
        time.sleep(0.02)
    # It was never even asked for frames or heartbeats: only `world` and `status/`.
    assert publishers[1].subscriptions == {b"world", b"status/"}
    assert cache.camera_ids() == [0]
    assert abs(int(decode_jpeg(client.simulate_get("/latest/0").content).mean()) - 30) <= 2
    # …while the node's port cannot publish the world.
    publishers[0].publish(World(model={"objects": [{"label": "fake"}]}, source="node"))
    publishers[1].publish(World(model={"objects": [{"label": "cup"}]}, source="tracker"))
    world = wait_until(lambda: client.simulate_get("/world").json["objects"], what="the world")
    assert world == [{"label": "cup"}]


def test_the_configured_owner_is_served_and_the_conflict_stays_visible(publishers, make_cache):
    a, b = FakeNode(publishers[0], "node-a"), FakeNode(publishers[1], "node-b")
    cache = make_cache(b.endpoint, a.endpoint, owners={0: "node-a"})
    client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
    announce(b, cache, 0)  # the other node announces first
    deliver(a, cache, 0, value=20)

    def both_claim():
        a.meta(0)
        b.meta(0)
        b.frame(0, value=240)
        return "duplicate" in client.simulate_get("/status").json["0"]

    wait_until(both_claim, what="the conflict shown")
    status = client.simulate_get("/status").json["0"]
    assert status["node"] == "node-a" and status["duplicate"]["serving"] == "node-a"
    deliver(a, cache, 0, value=20)
    assert abs(int(decode_jpeg(client.simulate_get("/latest/0").content).mean()) - 20) <= 2
    # node-a stops; node-b goes on: it is still never served in node-a's place.
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        b.meta(0)
        b.frame(0, value=240)
        time.sleep(0.1)
    status = client.simulate_get("/status").json["0"]
    assert status["node"] == "node-a" and status["connected"] is False
    latest = client.simulate_get("/latest/0")
    assert latest.status_code != 200 or abs(int(decode_jpeg(latest.content).mean()) - 240) > 10


@pytest.mark.parametrize("model", [
    {"objects": [], "updated": float("inf")},
    {"objects": [{"label": "cup", "x": float("nan")}], "updated": 1.0},
])
def test_a_world_model_json_cannot_carry_is_refused_and_world_still_answers(
        publishers, make_cache, model):
    cache = make_cache(publishers[0].endpoint, tracker=[publishers[1].endpoint])
    client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
    publishers[1].wait_for_subscriber(b"world")
    wait_until(lambda: publishers[1].publish(World(model=model, source="tracker"))
               and cache.tracker.stats.malformed >= 1, what="the bad world counted")
    answer = client.simulate_get("/world")
    assert answer.status_code == 200 and answer.json["objects"] == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                       max_size=3),
    max_leaves=12,
)
# Valid-looking: a node's usual heartbeat with one field (or a new one) of any JSON shape.
BASE_REGISTRY = {"id": 0, "device": "/dev/video0", "name": "Overhead", "role": "overhead",
                 "mount": "fixed", "resolution": [64, 48], "fov_deg": 78.0, "description": "d"}
BASE_HEALTH = {"connected": True, "fps": 15.0, "state": "streaming", "errors": 0,
               "last_error": "", "width": 64, "height": 48, "frames": 10}


def one_field_of_any_shape(base: dict) -> st.SearchStrategy:
    return st.builds(lambda key, value: {**base, key: value},
                     st.sampled_from([*base, "extra", "gateway"]), json_values)


registries = one_field_of_any_shape(BASE_REGISTRY)
healths = one_field_of_any_shape(BASE_HEALTH)
models = st.fixed_dictionaries({}, optional={k: json_values for k in ("objects", "updated", "frame")})
states = st.fixed_dictionaries({}, optional={"cameras": st.dictionaries(
    st.sampled_from(["0", "1", "x"]), json_values, max_size=2) | json_values})
ROUTES = ("/status", "/cameras", "/world", "/scan", "/latest/0", "/snapshot.jpg", "/")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(registry=registries, health=healths, model=models, state=states, report=healths)
def test_valid_looking_messages_never_make_an_http_route_fail(
        shared_fabric, registry, health, model, state, report):
    pub, cache, client = shared_fabric
    before = cache.subscriber.stats.received + cache.subscriber.stats.malformed
    pub.publish_parts(raw_meta(0, registry, health), cache=False)
    for msg in (World(model=model, source="t"), Status(service="svc", state=state),
                Scan(node="node-a", report=report)):
        try:
            pub.publish_parts(encode(msg), cache=False)
        except ValueError:  # a value msgpack cannot hold (an integer beyond 64 bits)
            pass
    wait_until(lambda: cache.subscriber.stats.received + cache.subscriber.stats.malformed > before,
               what="the heartbeat handled")
    time.sleep(0.02)
    for route in ROUTES:
        answer = client.simulate_get(route)
        # 503 (no frame yet, camera disconnected) is an answer; a 500 never is.
        assert answer.status_code < 500 or answer.status_code == 503, (route, answer.text)
        if answer.headers.get("content-type", "").startswith("application/json"):
            assert answer.json is not None


@pytest.fixture(scope="module")
def shared_fabric():
    """One publisher playing node, tracker and service, and one cache over it, for the whole
    property test (hypothesis runs many examples in one test)."""
    import zmq

    context = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:0", context=context).start()
    cache = FrameCache([pub.endpoint], tracker=[pub.endpoint], services=[pub.endpoint],
                       context=context).start()
    for topic in (b"meta/0/", b"world", b"status/", b"scan/"):
        pub.wait_for_subscriber(topic)
    yield pub, cache, falcon.testing.TestClient(create_app(cache, GatewayConfig(snap_timeout_s=0.1)))
    cache.close()
    pub.stop()
    context.destroy(linger=0)
