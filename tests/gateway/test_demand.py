"""On demand, end to end: a real capture node with a synthetic camera behind a real gateway.
The node encodes a camera's JPEG only while an HTTP client wants it — a stream while it is
open, a snapshot request for the gateway's idle window after it — as its own encode counter
shows."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode

from .support import RawHttp, read_part_by_length, wait_until

IDLE_S = 1.0  # the gateway's idle lapse, small so the test is short
# After the last client, the gateway's unsubscription is swept and travels to the node, and a
# capture already in hand may still be encoded: a few seconds on a loaded machine.
SETTLE_S = 3.0
QUIET_S = 2.0  # how long the encode counter is watched standing still (20 captures at 10 fps)


@pytest.fixture
def capture_node(zmq_context) -> Iterator[CaptureNode]:
    camera = CameraConfig(id=0, name="bed", role="overhead", resolution=(160, 120), fps=10)
    node = CaptureNode(NodeConfig(name="n", publish="tcp://127.0.0.1:0", cameras=(camera,)),
                       zmq_context).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def gateway(make_gateway, capture_node):
    gw = make_gateway(capture_node.endpoint, idle_s=IDLE_S, snap_timeout_s=2.0)
    wait_until(lambda: requests.get(gw.url + "status", timeout=5).json().get("0", {}).get("connected"),
               10.0, what="camera 0 connected")
    return gw


def _encodes(node: CaptureNode) -> int:
    return node.loops[0].counters["encodes"]


def _assert_encoding_stops(node: CaptureNode) -> None:
    time.sleep(IDLE_S + SETTLE_S)
    before = _encodes(node)
    time.sleep(QUIET_S)
    assert _encodes(node) == before, "the node still encodes JPEG with nobody watching"


def test_a_closed_stream_lets_the_node_stop_encoding(gateway, capture_node):
    """Open a stream for several idle windows (it stays fed all along), close it: within the
    idle window and a few seconds the node's JPEG encode counter stands still."""
    conn = RawHttp(gateway.url, "/cam/0")
    try:
        assert conn.status == 200
        start = time.monotonic()
        parts = 0
        while time.monotonic() - start < 3 * IDLE_S:
            part = read_part_by_length(conn)
            parts += 1
        # an open stream alone keeps the camera wanted, past any idle window
        assert abs(part.timestamp - time.time()) < 1.0
        assert parts >= 10
        encoded = _encodes(capture_node)
        assert encoded >= parts
    finally:
        conn.close()
    _assert_encoding_stops(capture_node)


@pytest.mark.parametrize("path", ["/latest/0", "/snap/0"])
def test_a_snapshot_request_wants_the_camera_for_the_idle_window_only(gateway, capture_node, path):
    answer = requests.get(gateway.url + path.lstrip("/"), timeout=5)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert _encodes(capture_node) >= 1
    _assert_encoding_stops(capture_node)


def test_streams_that_come_and_go_leave_nothing_wanted(gateway, capture_node):
    """Several streams, opened and closed one after another and side by side: once the last
    one is gone, nothing keeps the camera subscribed."""
    for _ in range(3):
        conns = [RawHttp(gateway.url, "/cam/0") for _ in range(2)]
        try:
            for conn in conns:
                read_part_by_length(conn)
        finally:
            for conn in conns:
                conn.close()
    _assert_encoding_stops(capture_node)
    assert gateway.cache.wanted() == []
