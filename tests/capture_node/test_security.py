"""A node beyond loopback's rules, tried on loopback: CURVE admits authorised clients only."""

from __future__ import annotations

import shutil

import pytest

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, CurveConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import CurveClient, generate_keypair
from tests.conftest import ANY_PORT


@pytest.fixture
def keys(tmp_path):
    """A node key pair, one authorised client and one stranger."""
    node_public, node_secret = generate_keypair(tmp_path / "node", "node")
    _, good_secret = generate_keypair(tmp_path / "client", "robot")
    _, bad_secret = generate_keypair(tmp_path / "stranger", "stranger")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    shutil.copy(tmp_path / "client" / "robot.key", authorized / "robot.key")
    return {
        "server": CurveConfig(node_secret, authorized),
        "good": CurveClient(good_secret, node_public),
        "bad": CurveClient(bad_secret, node_public),
    }


def test_curve_serves_the_authorised_client_only(zmq_context, keys):
    config = NodeConfig(name="secure", publish=ANY_PORT, curve=keys["server"],
                        cameras=(CameraConfig(id=0, resolution=(160, 120), fps=20),))
    with CaptureNode(config, zmq_context) as node:
        with protocol.Subscriber(node.endpoint, cameras=[0], context=zmq_context,
                                 curve=keys["good"]) as good:
            frame = good.latest(0, timeout=3.0)
        assert frame.image.shape == (120, 160, 3)
        with protocol.Subscriber(node.endpoint, cameras=[0], context=zmq_context,
                                 curve=keys["bad"]) as stranger:
            with pytest.raises(protocol.FrameTimeout):
                stranger.latest(0, timeout=1.0)
            assert stranger.meta(0) is None
        with (protocol.Subscriber(node.endpoint, cameras=[0], context=zmq_context) as plain,
              pytest.raises(protocol.FrameTimeout)):
            plain.latest(0, timeout=0.5)
