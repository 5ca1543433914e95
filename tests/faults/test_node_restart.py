"""A node restarted with another set of cameras: what it announces now is the truth at the
gateway within seconds, and nothing it captured before the restart is served after it."""

from __future__ import annotations

import time

import falcon.testing
import pytest

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache

from ..gateway.support import wait_until

WITHIN_S = 5.0  # "within seconds" of the restart


def start_node(zmq_context, endpoint: str, cams: tuple[int, ...]) -> CaptureNode:
    cameras = tuple(CameraConfig(id=cam, resolution=(64, 48), fps=10.0) for cam in cams)
    return CaptureNode(NodeConfig(name="bench", publish=endpoint, cameras=cameras),
                       zmq_context).start()


def metric_cameras(client: falcon.testing.TestClient) -> set[str]:
    text = client.simulate_get("/metrics").text
    return {line.split('camera="', 1)[1].split('"', 1)[0]
            for line in text.splitlines() if line.startswith("camfabric_camera_connected{")}


def shown_everywhere(client: falcon.testing.TestClient) -> tuple[set[str], ...]:
    return (set(client.simulate_get("/cameras").json), set(client.simulate_get("/status").json),
            metric_cameras(client))


@pytest.fixture
def gateway_of(zmq_context):
    caches: list[FrameCache] = []

    def make(endpoint: str) -> falcon.testing.TestClient:
        caches.append(FrameCache(endpoint, context=zmq_context).start())
        return falcon.testing.TestClient(create_app(caches[-1]))

    yield make
    for cache in caches:
        cache.close()


def test_a_restarted_node_with_another_camera_set_is_the_truth_within_seconds(
        zmq_context, gateway_of, ipc_endpoint):
    # The node restarts where it was: on a Unix socket, which nothing else can take meanwhile
    # (a TCP port freed by the first run may be any other program's next connection).
    first = start_node(zmq_context, ipc_endpoint, (0, 1, 2))
    endpoint = first.endpoint
    client = gateway_of(endpoint)
    try:
        wait_until(lambda: shown_everywhere(client) == ({"0", "1", "2"},) * 3, timeout=WITHIN_S,
                   what="the first run's cameras")
        for cam in (0, 2):  # both watched: their frames are in the gateway's cache
            wait_until(lambda c=cam: client.simulate_get(f"/latest/{c}").status_code == 200,
                       what=f"a frame of camera {cam}")
    finally:
        first.stop()
    second = start_node(zmq_context, endpoint, (0, 1, 5))  # camera 2 out, camera 5 in
    restarted = time.monotonic()
    try:
        served_old: list[str] = []

        def truth() -> bool:
            # Once the gateway has heard the new run (camera 5 is known), nothing of the old
            # run is served: camera 2 has no frame to give, camera 0 only frames captured since.
            seen = shown_everywhere(client)
            if "5" in seen[0]:
                old = client.simulate_get("/latest/2")
                if old.status_code == 200:
                    served_old.append("camera 2")
                zero = client.simulate_get("/latest/0")
                since_ms = (time.monotonic() - restarted) * 1000
                if zero.status_code == 200 and int(zero.headers["X-Frame-Age-Ms"]) > since_ms:
                    served_old.append(f"camera 0, {zero.headers['X-Frame-Age-Ms']} ms old")
            return seen == ({"0", "1", "5"},) * 3

        wait_until(truth, timeout=WITHIN_S, what="camera 2 gone and camera 5 shown everywhere")
        assert served_old == []
        assert client.simulate_get("/latest/2").status_code == 404
        assert client.simulate_get("/snap/2").status_code == 404
        assert set(client.simulate_get("/scan").json["bench"]["cameras"]) == {"0", "1", "5"}
        # …and it stays gone: no heartbeat of the old run brings it back.
        time.sleep(1.5)
        assert shown_everywhere(client) == ({"0", "1", "5"},) * 3
    finally:
        second.stop()
