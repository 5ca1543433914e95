"""The fabric proxy: subscriptions reach the node one by one, frames come back untouched."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import ConfigError, topics
from camfabric.proxy import FabricProxy, ProxyConfig

from .conftest import ANY_PORT
from .gateway.support import wait_until

JPEG = protocol.encode_jpeg(np.zeros((8, 8, 3), np.uint8))


def test_frames_cross_the_proxy_and_late_joiners_get_the_cached_frame(zmq_context):
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context) as node, \
            FabricProxy(ProxyConfig(upstream=[node.endpoint], publish="tcp://127.0.0.1:0"),
                        context=zmq_context) as proxy:
        with protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context) as first:
            # The node itself learns that someone behind the proxy wants camera 0's JPEGs.
            assert node.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
            assert not node.wants(topics.frame(0, "bgr8"))
            node.publish(protocol.Frame(cam=0, seq=11, t_capture_ns=time.time_ns(), w=8, h=8,
                                        encoding="jpeg", data=JPEG, node="n"))
            assert first.latest(0, timeout=2).seq == 11
            with protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context) as late:
                assert late.latest(0, timeout=2).seq == 11
        assert proxy.forwarded >= 2


def test_a_lan_address_without_keys_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as info:
        ProxyConfig(publish="tcp://0.0.0.0:5570")
    assert info.value.path == "publish"


def encodes(beats: protocol.Subscriber) -> int:
    """Camera 0's JPEG encodes so far, from the node's own newest heartbeat."""
    meta = beats.meta(0)
    return -1 if meta is None else meta.health["encodes"]


def test_subscribers_that_leave_through_the_proxy_stop_the_nodes_encoding(zmq_context):
    config = NodeConfig(name="n", publish=ANY_PORT, heartbeat_s=0.25,
                        cameras=(CameraConfig(id=0, resolution=(160, 120), fps=20),))
    with CaptureNode(config, zmq_context) as node, \
            FabricProxy(ProxyConfig(upstream=[node.endpoint], publish="tcp://127.0.0.1:0"),
                        context=zmq_context) as proxy, \
            protocol.Subscriber(node.endpoint, on_demand=True, context=zmq_context) as beats:
        jpeg = topics.frame(0, "jpeg")
        for _ in range(2):  # consumers come and go, overlapping
            with protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context) as a:
                a.latest(0, timeout=3)
                with protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context) as b:
                    b.latest(0, timeout=3)  # the second one, too, is answered at once
                    assert node.publisher.wants(jpeg)
        left = time.monotonic()
        assert node.publisher.wait_for_no_subscriber(jpeg, timeout=5)

        def steady() -> bool:
            before = encodes(beats)
            time.sleep(0.6)  # a couple of heartbeats
            return before >= 0 and encodes(beats) == before

        wait_until(steady, timeout=5, what="the node to stop encoding for nobody")
        assert time.monotonic() - left < 5
        frozen = encodes(beats)
        time.sleep(1.0)
        assert encodes(beats) == frozen
    assert proxy.subscribers[jpeg] == 0


def test_a_socket_that_subscribed_twice_and_left_stops_the_nodes_encoding_through_the_proxy(
        zmq_context):
    # libzmq's SUB sends each subscribe but only its last unsubscribe: the proxy must not count
    # the messages, or the node would encode for nobody after this one client left.
    config = NodeConfig(name="n", publish=ANY_PORT,
                        cameras=(CameraConfig(id=0, resolution=(64, 48), fps=20),))
    with CaptureNode(config, zmq_context) as node, \
            FabricProxy(ProxyConfig(upstream=[node.endpoint], publish="tcp://127.0.0.1:0"),
                        context=zmq_context) as proxy:
        jpeg = topics.frame(0, "jpeg")
        raw = zmq_context.socket(zmq.SUB)
        raw.linger = 0
        raw.connect(proxy.endpoint)
        raw.setsockopt(zmq.SUBSCRIBE, jpeg)
        raw.setsockopt(zmq.SUBSCRIBE, jpeg)
        assert node.publisher.wait_for_subscriber(jpeg, timeout=5)
        assert raw.poll(5000), "no frame through the proxy"
        raw.setsockopt(zmq.UNSUBSCRIBE, jpeg)
        raw.setsockopt(zmq.UNSUBSCRIBE, jpeg)
        assert node.publisher.wait_for_no_subscriber(jpeg, timeout=5)
        raw.close()


def test_the_subscriber_side_curve_keys_load_from_the_config(tmp_path):
    from camfabric.protocol import CurveServer
    from camfabric.runtime.config import load_section

    config = tmp_path / "camfabric.toml"
    config.write_text('[proxy]\npublish = "tcp://0.0.0.0:5570"\n'
                      'curve = { secret_key_file = "k/proxy.key_secret", '
                      'authorized_keys_dir = "k/clients" }\n')
    loaded = load_section(config, "proxy", ProxyConfig)
    assert isinstance(loaded.curve, CurveServer)
    assert str(loaded.curve.authorized_keys_dir) == "k/clients"


def test_endpoints_from_the_command_line_keep_every_other_configured_key(tmp_path):
    import argparse

    from camfabric import proxy

    config = tmp_path / "camfabric.toml"
    config.write_text('[proxy]\nupstream = ["tcp://127.0.0.1:5551"]\nsndhwm = 2\n')
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    proxy.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--publish", "tcp://127.0.0.1:5599"])
    chosen = proxy.settings(args)
    assert chosen.publish == "tcp://127.0.0.1:5599"
    assert chosen.upstream == ["tcp://127.0.0.1:5551"]
    assert chosen.sndhwm == 2  # was reset to the default when an endpoint was given
    args = parser.parse_args(["--config", str(config), "--upstream", "tcp://127.0.0.1:5552"])
    assert proxy.settings(args).upstream == ["tcp://127.0.0.1:5552"]
    assert proxy.settings(args).sndhwm == 2
