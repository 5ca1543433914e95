"""The fabric proxy: subscriptions reach the node one by one, frames come back untouched."""

from __future__ import annotations

import time

import numpy as np
import pytest

from camfabric import protocol
from camfabric.protocol import ConfigError, topics
from camfabric.proxy import FabricProxy, ProxyConfig

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
