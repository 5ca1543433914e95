"""H.264 on the fabric, seen from a subscriber: real node, real sockets, decoded with PyAV.

The contract (ARCHITECTURE.md, wire format): `frame/{cam}/h264` carries one access unit per
message in Annex B form, `key` in its header, SPS/PPS with every keyframe; the node encodes
only while someone subscribes, from the same captures as every other encoding; a new
subscriber can start decoding at once.
"""

from __future__ import annotations

import time

import msgpack
import pytest

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.h264 import NAL_PPS, NAL_SPS, nal_types
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import topics, wire

av = pytest.importorskip("av", reason="H.264 needs PyAV: pip install 'camfabric[webrtc]'")

W, H, FPS = 320, 240, 20.0
TOPIC = topics.frame(0, "h264")


@pytest.fixture
def node():
    camera = CameraConfig(id=0, name="Bed", resolution=(W, H), fps=FPS)
    with CaptureNode(NodeConfig(name="h264node", publish="tcp://127.0.0.1:0",
                                cameras=(camera,))) as node:
        yield node


def next_frame(sub: protocol.Subscriber, timeout: float = 3.0) -> protocol.Frame:
    frame = sub.poll(timeout)
    assert frame is not None, f"no h264 frame within {timeout} s"
    return frame


def h264_encodes(node: CaptureNode) -> int:
    return node.loops[0].counters["h264_encodes"]


def test_a_subscriber_decodes_the_stream_at_the_camera_size(node):
    decoder = av.CodecContext.create("h264", "r")
    with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as sub:
        first = next_frame(sub)
        assert first.key, "a new subscriber's first access unit is a keyframe"
        assert {NAL_SPS, NAL_PPS} <= set(nal_types(bytes(first.data)))
        assert (first.w, first.h) == (W, H) and first.encoding == "h264"
        pictures, frames, seqs = [], [first], [first.seq]
        for packet in [av.Packet(bytes(first.data))]:
            pictures += decoder.decode(packet)
        while len(pictures) < 20:
            frame = next_frame(sub)
            frames.append(frame)
            seqs.append(frame.seq)
            pictures += decoder.decode(av.Packet(bytes(frame.data)))
    assert {(p.width, p.height) for p in pictures} == {(W, H)}
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "one access unit per capture"
    assert all(0 <= f.age_ns() < 5e9 for f in frames)
    with pytest.raises(protocol.ProtocolError, match="decode the stream"):
        _ = first.image
    keys = [f for f in frames if f.key]
    assert all({NAL_SPS, NAL_PPS} <= set(nal_types(bytes(f.data))) for f in keys)


def test_no_h264_encode_without_a_subscriber_and_none_after_it_leaves(node):
    with protocol.Subscriber(node.endpoint, cameras=[0], encoding="jpeg") as jpeg:
        for _ in range(5):
            next_frame(jpeg)
        assert h264_encodes(node) == 0, "JPEG subscribers cost no H.264 encode"
        with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as sub:
            for _ in range(5):
                next_frame(sub)
        assert node.publisher.wait_for_no_subscriber(TOPIC, timeout=5.0)
        after = h264_encodes(node)
        frames = node.loops[0].counters["frames"]
        while node.loops[0].counters["frames"] < frames + 6:
            next_frame(jpeg)  # JPEG goes on, paced by the camera
        # One capture may have been in hand when the unsubscription arrived.
        assert h264_encodes(node) <= after + 1
        assert not node.loops[0].video.running


def test_a_late_joiner_gets_a_forced_keyframe_sooner_than_the_gop_brings_one(node):
    gop = node.loops[0].video.gop
    with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as early:
        start = next_frame(early)
        assert start.key
        for _ in range(3):
            next_frame(early)
        joined = time.monotonic()
        with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as late:
            first = next_frame(late)
            while not first.key:  # at most the capture in hand when it subscribed, under load
                first = next_frame(late)
            waited = time.monotonic() - joined
        assert waited < 2.0, "the first viewer gets video within 2 s"
        # Without the forced keyframe the next one would come with the GOP, `gop` captures after
        # the stream's first: the joiner's came earlier.
        assert first.seq < start.seq + gop
        decoder = av.CodecContext.create("h264", "r")
        assert [(p.width, p.height) for p in decoder.decode(av.Packet(bytes(first.data)))] == [(W, H)]


def test_the_wire_refuses_an_h264_message_that_breaks_the_format():
    good = protocol.Frame(cam=0, seq=1, t_capture_ns=1, w=W, h=H, encoding="h264",
                          data=b"\0\0\0\1\x67rest", key=True)
    parts = wire.encode(good)
    assert wire.decode(parts).key is True
    header = msgpack.unpackb(parts[1])
    for broken, why in (
        ([parts[0], parts[1], b"\xff\xd8 not annex b"], "start code"),
        ([parts[0], msgpack.packb({**header, "key": 1}), parts[2]], "key"),
        ([parts[0], msgpack.packb({k: v for k, v in header.items() if k != "key"}), parts[2]], "key"),
    ):
        with pytest.raises(protocol.ProtocolError, match=why):
            wire.decode(broken)


NODE_WITHOUT_PYAV = """
import sys
sys.modules["av"] = None  # as on a 32-bit Raspberry Pi OS without the webrtc extra
import logging
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
logging.basicConfig(level=logging.WARNING)
camera = CameraConfig(id=0, name="Bed", resolution=(320, 240), fps=20.0)
with CaptureNode(NodeConfig(name="nopyav", publish="tcp://127.0.0.1:0", cameras=(camera,))) as node:
    print(node.endpoint, flush=True)
    sys.stdin.read()
"""


def test_without_pyav_h264_subscribers_hear_nothing_and_jpeg_goes_on():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    node = subprocess.Popen([sys.executable, "-c", NODE_WITHOUT_PYAV], cwd=root, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        endpoint = node.stdout.readline().strip()
        with protocol.Subscriber(endpoint, cameras=[0], encoding=["h264", "jpeg"]) as sub:
            jpeg = sub.latest(0, timeout=5.0, encoding="jpeg")
            assert (jpeg.w, jpeg.h) == (320, 240)
            later = sub.latest(0, timeout=5.0, encoding="jpeg", newer_than=jpeg)
            assert later.seq > jpeg.seq, "JPEG goes on while H.264 cannot be made"
            with pytest.raises(protocol.FrameTimeout):
                sub.latest(0, timeout=1.0, encoding="h264")
            health = sub.meta(0).health
            assert health["connected"] and health["last_error"] == ""
            assert health["h264_encodes"] == 0 and health["publish_failed"] > 0
    finally:
        node.stdin.close()
        node.wait(10)
    log = node.stderr.read()
    assert log.count("cannot encode H.264") == 1, log  # once, not once per frame
    assert "camfabric[webrtc]" in log
