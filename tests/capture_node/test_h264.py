"""H.264 on the fabric, seen from a subscriber: real node, real sockets, decoded with PyAV.

The contract (ARCHITECTURE.md, wire format): `frame/{cam}/h264` carries one access unit per
message in Annex B form, `key` in its header, SPS/PPS with every keyframe; the node encodes
only while someone subscribes, from the same captures as every other encoding; a new
subscriber can start decoding at once.
"""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.h264 import NAL_PPS, NAL_SPS, nal_types
from camfabric.capture_node.node import CaptureNode
from camfabric.capture_node.source import Capture, Source
from camfabric.protocol import topics, wire
from camfabric.runtime.errors import ConfigError

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
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.node import CaptureNode
from camfabric.capture_node.source import Capture, Source
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


class H264Camera(Source):
    """A camera that encodes H.264 itself (as `rpicam-vid --codec h264` or a UVC H.264 camera
    does): each read gives one access unit, a keyframe every `gop` pictures."""

    kind = "h264camera"

    def __init__(self, w: int = W, h: int = H, fps: float = FPS, gop: int = 10) -> None:
        self.w, self.h, self.fps, self.gop = w, h, fps, gop
        self.sent: dict[int, bytes] = {}  # t_capture_ns -> the access unit as the camera made it
        self.pictures: dict[int, np.ndarray] = {}
        self._wake = threading.Event()
        self._count = 0
        self._encoder = None

    def open(self) -> None:
        import fractions

        self._encoder = av.CodecContext.create("libx264", "w")
        self._encoder.width, self._encoder.height, self._encoder.pix_fmt = self.w, self.h, "yuv420p"
        self._encoder.time_base = fractions.Fraction(1, 90000)
        self._encoder.gop_size = self.gop
        self._encoder.max_b_frames = 0
        self._encoder.options = {"preset": "ultrafast", "tune": "zerolatency",
                                 "x264-params": "repeat-headers=1"}

    def read(self, timeout: float) -> Capture:
        if self._wake.wait(1 / self.fps):
            raise SourceError("interrupted")
        picture = np.full((self.h, self.w, 3), 40, dtype=np.uint8)
        x = (self._count * 7) % (self.w - 40)
        picture[60:120, x:x + 40] = (30, 200, 240)
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = self._count * 6000
        self._count += 1
        packet = self._encoder.encode(frame)[0]
        t_capture_ns = time.time_ns()
        self.sent[t_capture_ns] = bytes(packet)
        self.pictures[t_capture_ns] = picture
        return Capture(t_capture_ns, self.w, self.h, h264=bytes(packet), key=packet.is_keyframe)

    def close(self) -> None:
        self._encoder = None

    def interrupt(self) -> None:
        self._wake.set()


@pytest.fixture
def h264_camera_node():
    camera = H264Camera()
    config = CameraConfig(id=0, name="UVC H.264", resolution=(W, H), fps=FPS)
    with CaptureNode(NodeConfig(name="h264cam", publish="tcp://127.0.0.1:0", cameras=(config,)),
                     sources={0: camera}) as node:
        yield node, camera


def test_a_cameras_own_h264_is_passed_through_untouched(h264_camera_node):
    node, camera = h264_camera_node
    with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as sub:
        frames = [next_frame(sub) for _ in range(15)]
    assert all(bytes(f.data) == camera.sent[f.t_capture_ns] for f in frames), "byte for byte"
    assert any(f.key for f in frames) and (frames[0].w, frames[0].h) == (W, H)
    counts = node.loops[0].counters
    assert counts["h264_encodes"] == 0 and counts["passthrough"] >= 15
    assert counts["decodes"] == 0, "nobody wanted a picture: nothing decoded"


def test_jpeg_of_an_h264_camera_is_decoded_from_its_stream(h264_camera_node):
    node, camera = h264_camera_node
    with protocol.Subscriber(node.endpoint, cameras=[0], encoding="jpeg") as sub:
        first = sub.latest(0, timeout=5.0)  # from the first keyframe on (gop: 10 pictures)
        later = sub.latest(0, timeout=5.0, newer_than=first)
    for frame in (first, later):
        assert (frame.w, frame.h) == (W, H)
        source = camera.pictures[frame.t_capture_ns]
        assert np.abs(frame.image.astype(int) - source.astype(int)).mean() < 6  # the same picture
    assert node.loops[0].counters["decodes"] > 0
    assert node.loops[0].counters["h264_encodes"] == 0


def encoded_units(count: int, gop: int, w: int = W, h: int = H) -> list[tuple[bytes, bool]]:
    """`count` access units of a moving picture, as a camera's encoder makes them."""
    camera = H264Camera(w, h, gop=gop)
    camera.open()
    units = []
    for _ in range(count):
        capture = camera.read(1.0)
        units.append((capture.h264, capture.key))
    return units


def test_an_rpicam_h264_stream_is_split_into_its_units_and_passed_through():
    from tests.fakes.rpicam_tcp import RpicamTcpServer

    units = encoded_units(20, gop=10)
    assert units[0][1] and units[10][1]
    with RpicamTcpServer([u for u, _ in units], fps=30) as server:
        server.split_writes = True  # units cut at random places, as TCP may
        camera = CameraConfig(id=0, name="Pi", resolution=(W, H), fps=30.0, source={
            "kind": "rpicam", "spawn": False, "port": server.port, "codec": "h264"})
        with CaptureNode(NodeConfig(name="pi", publish="tcp://127.0.0.1:0", cameras=(camera,))) as node, \
                protocol.Subscriber(node.endpoint, cameras=[0], encoding=["h264", "jpeg"]) as sub:
            jpeg = sub.latest(0, timeout=5.0, encoding="jpeg")
            frames = []
            while len(frames) < 25:
                frame = sub.poll(3.0)
                assert frame is not None, "the units stopped coming"
                if frame.encoding == "h264":
                    frames.append(frame)
    sent = dict(units)
    assert all(bytes(f.data) in sent for f in frames), "every unit whole, byte for byte"
    assert all(f.key == sent[bytes(f.data)] for f in frames)
    assert node.loops[0].counters["h264_encodes"] == 0
    assert (jpeg.w, jpeg.h) == (W, H) and jpeg.image.shape == (H, W, 3)


def test_rpicam_is_asked_for_h264_with_parameter_sets_at_every_keyframe_once_a_second():
    from camfabric.capture_node.sources.rpicam import Options, rpicam_argv

    argv = rpicam_argv(Options(codec="h264"), 1280, 720, 30.0)
    assert argv[argv.index("--codec") + 1] == "h264"
    assert "--inline" in argv and argv[argv.index("--intra") + 1] == "30"
    assert "--inline" not in rpicam_argv(Options(), 1280, 720, 30.0)
    with pytest.raises(ConfigError) as bad:
        CameraConfig(id=0, source={"kind": "rpicam", "codec": "hevc"})
    assert bad.value.path == "source.codec"
    with pytest.raises(ConfigError):
        CameraConfig(id=0, source={"kind": "rpicam", "codec": "h264", "args": ["--intra", "5"]})


def test_the_splitter_finds_each_unit_in_any_cut_of_the_stream_after_noise():
    import random

    from camfabric.capture_node.sources.h264_stream import H264Splitter

    units = encoded_units(12, gop=4)
    stream = b"\x12\x34noise" + b"".join(u for u, _ in units)
    rng = random.Random(7)
    splitter, out, at = H264Splitter(), [], 0
    while at < len(stream):
        step = rng.randint(1, 300)
        out += splitter.feed(stream[at:at + step])
        at += step
    assert out == units[:-1], "each unit whole, with its key flag; the last waits for the next"
    assert splitter.discarded == len(b"\x12\x34noise")


def test_a_loop_that_falls_behind_loses_the_units_up_to_the_next_keyframe_not_a_queue():
    from camfabric.capture_node.sources.h264_stream import UnitQueue

    queue = UnitQueue(max_units=5)
    for i in range(12):  # keyframes at 0 and 10; nobody takes anything
        queue.put((bytes([i]), i % 10 == 0), i)
    # Units 0-4 filled it; 5 overflowed it (all dropped, 5 not a keyframe: skip to the next one).
    taken = []
    while True:
        try:
            taken.append(queue.take(0.01, "cam")[0][0])
        except SourceError:
            break
    assert taken == [10, 11]
    assert queue.dropped == 10
