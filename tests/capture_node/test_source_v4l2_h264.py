"""A V4L2 camera whose format is H264: its access units passed through, never decoded by OpenCV.

Real H.264 comes from libx264 (PyAV), encoded the way many UVC cameras send it: SPS/PPS once,
in front of the first keyframe only. OpenCV's VideoCapture is replaced by
tests/fakes/opencv_v4l2.py (this machine has no camera); everything after it — the source's
open and read, the node, the fabric — is the real thing.
"""

from __future__ import annotations

import fractions
import logging

import numpy as np
import pytest

from camfabric import cli, protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.h264 import NAL_IDR, NAL_PPS, NAL_SPS, ParameterSets, nal_types
from camfabric.capture_node.node import CaptureNode
from camfabric.capture_node.sources import v4l2
from camfabric.protocol.errors import ConfigError, ProtocolError
from tests.fakes.opencv_v4l2 import FakeV4l2Capture
from tests.fakes.rpicam_tcp import numbered_jpegs

av = pytest.importorskip("av", reason="H.264 needs PyAV: pip install 'camfabric[webrtc]'")

W, H, GOP = 320, 240, 5


def uvc_units(count: int, gop: int = GOP) -> list[tuple[bytes, bool]]:
    """`count` access units of a moving picture, SPS/PPS only in front of the first keyframe."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = W, H, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.gop_size = gop
    encoder.max_b_frames = 0
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "repeat-headers=1"}
    units = []
    for i in range(count):
        picture = np.full((H, W, 3), 40, np.uint8)
        picture[60:120, (i * 9) % (W - 40):(i * 9) % (W - 40) + 40] = (30, 200, 240)
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = i * 3000
        for packet in encoder.encode(frame):
            unit = bytes(packet)
            if units and packet.is_keyframe:
                unit = unit[first_slice(unit):]  # as a camera that sends them once
            units.append((unit, bool(packet.is_keyframe)))
    return units


def first_slice(unit: bytes) -> int:
    """Offset of the start code (3 or 4 bytes) in front of the first coded slice."""
    at = unit.find(b"\0\0\1")
    while unit[at + 3] & 0x1F not in (1, 5):
        at = unit.find(b"\0\0\1", at + 3)
    return at - 1 if unit[at - 1] == 0 else at


UNITS = uvc_units(3 * GOP)


def camera(**source) -> CameraConfig:
    return CameraConfig(id=0, resolution=(W, H), fps=30, source={"kind": "v4l2", **source})


def test_the_encoder_here_sends_parameter_sets_once_as_such_cameras_do():
    keys = [unit for unit, key in UNITS if key]
    assert len(keys) == 3
    assert {NAL_SPS, NAL_PPS} <= set(nal_types(keys[0]))
    assert not {NAL_SPS, NAL_PPS} & set(nal_types(keys[1])), "the case this source must repair"


def test_buffers_become_access_units_keyframes_with_their_parameter_sets():
    sets = ParameterSets()
    out = [v4l2.h264_from_buffer(np.frombuffer(unit, np.uint8).reshape(1, -1), sets)
           for unit, _ in UNITS]
    assert [key for _, key in out] == [key for _, key in UNITS]
    for (unit, key), (got, _) in zip(UNITS, out, strict=True):
        if not key or NAL_SPS in nal_types(unit):
            assert got == unit, "passed through untouched"
        else:
            assert got.endswith(unit) and nal_types(got)[:2] == [NAL_SPS, NAL_PPS]
            assert got[: -len(unit)] == out[0][0][: len(got) - len(unit)], "the camera's own SPS/PPS"
    # A late joiner starting at the second keyframe decodes with a fresh decoder.
    late = [got for got, _ in out[GOP:]]
    decoder = av.CodecContext.create("h264", "r")
    pictures = [p for unit in late for p in decoder.decode(av.Packet(unit))]
    assert len(pictures) == len(late) and {(p.width, p.height) for p in pictures} == {(W, H)}


def test_garbage_buffers_are_refused():
    sets = ParameterSets()
    first_key = UNITS[0][0]
    sps_pps = first_key[: first_slice(first_key)]
    for garbage, why in [(numbered_jpegs(1, 64, 48)[0], "start code"),
                         (bytes(1000), "start code"),
                         (b"\x12\x34" + UNITS[1][0], "start code"),
                         (sps_pps, "no coded picture")]:
        with pytest.raises(ProtocolError, match=why):
            v4l2.h264_from_buffer(garbage, sets)
    later_key = UNITS[GOP][0]
    assert NAL_IDR in nal_types(later_key)
    with pytest.raises(ProtocolError, match="none yet"):
        v4l2.h264_from_buffer(later_key, ParameterSets())


@pytest.mark.parametrize(("requested", "negotiated", "delivery", "reason"), [
    ("H264", "H264", "h264", "passing its access units through"),
    ("H264", "YUYV", "decoded", "asked for H264, camera delivers YUYV: capturing raw"),
])
def test_delivery_decision(requested, negotiated, delivery, reason):
    got, why = v4l2.decide_delivery(requested, negotiated, True)
    assert got == delivery and reason in why


def test_without_raw_buffers_h264_is_refused_never_decoded():
    with pytest.raises(SourceError, match="cannot hand over its buffers undecoded"):
        v4l2.without_raw_mode("/dev/video0", "h264", "camera delivers H264", raw=False)
    assert v4l2.without_raw_mode("/dev/video0", "h264", "ok", raw=True) == ("h264", "ok")
    assert v4l2.without_raw_mode("/dev/video0", "jpeg", "x", raw=False)[0] == "decoded"


def open_source(fake: FakeV4l2Capture, monkeypatch, tmp_path) -> v4l2.V4l2Source:
    device = tmp_path / "video0"
    device.touch()
    monkeypatch.setattr(v4l2.cv2, "VideoCapture", fake)
    cam = camera(device=f"/dev/..{device}", fourcc="H264")
    return v4l2.create(cam.options, cam)


def test_the_read_loop_skips_and_counts_garbage_and_hands_over_units(monkeypatch, tmp_path, caplog):
    units = [unit for unit, _ in UNITS[: GOP + 2]]
    garbage = [b"\xff\xd8 not h264", bytes(64)]
    fake = FakeV4l2Capture([garbage[0], units[0], *units[1:GOP], garbage[1], *units[GOP:]])
    source = open_source(fake, monkeypatch, tmp_path)
    source.open()
    assert source.delivery == "h264" and not fake.convert_rgb
    captures = []
    with caplog.at_level(logging.WARNING):
        for _ in units:
            captures.append(source.read(timeout=1.0))
    assert source.bad_frames == 2
    assert [c.h264 for c in captures[:GOP]] == units[:GOP]
    assert [c.key for c in captures] == [key for _, key in UNITS[: GOP + 2]]
    assert {NAL_SPS, NAL_PPS} <= set(nal_types(captures[GOP].h264)), "prepended"
    assert all((c.w, c.h) == (W, H) and c.image is None and c.jpeg is None for c in captures)
    assert sum("skipping a bad frame" in r.message for r in caplog.records) == 2  # once per run
    with pytest.raises(SourceError, match="no frame"):
        source.read(timeout=0.5)
    source.close()


def test_an_opencv_that_cannot_hand_over_buffers_fails_at_open(monkeypatch, tmp_path):
    fake = FakeV4l2Capture([UNITS[0][0]], raw_switch=False)
    source = open_source(fake, monkeypatch, tmp_path)
    with pytest.raises(SourceError, match="cannot hand over its buffers undecoded"):
        source.open()
    assert not fake.opened, "the device is released"


def test_a_converted_picture_is_never_taken_for_h264(monkeypatch, tmp_path):
    fake = FakeV4l2Capture([UNITS[0][0]])
    source = open_source(fake, monkeypatch, tmp_path)
    source.open()
    fake.convert_rgb = True  # OpenCV converting despite being told not to
    with pytest.raises(SourceError, match="converted"):
        source.read(timeout=1.0)


def test_the_node_passes_the_cameras_h264_through_and_decodes_it_only_for_jpeg(monkeypatch, tmp_path):
    units = [unit for unit, _ in uvc_units(200, gop=10)]
    fake = FakeV4l2Capture(units)
    source = open_source(fake, monkeypatch, tmp_path)
    config = NodeConfig(name="uvc", publish="tcp://127.0.0.1:0",
                        cameras=(CameraConfig(id=0, resolution=(W, H), fps=30),))
    with CaptureNode(config, sources={0: source}) as node:
        with protocol.Subscriber(node.endpoint, cameras=[0], encoding="h264") as sub:
            frames = [sub.poll(5.0) for _ in range(25)]
        assert all(f is not None for f in frames)
        sent = set(units)
        keys = [f for f in frames if f.key]
        assert keys and all({NAL_SPS, NAL_PPS} <= set(nal_types(bytes(f.data))) for f in keys)
        assert all(bytes(f.data) in sent for f in frames if not f.key), "untouched"
        assert node.loops[0].counters["decodes"] == 0, "nobody wanted a picture"
        with protocol.Subscriber(node.endpoint, cameras=[0], encoding="jpeg") as sub:
            jpeg = sub.latest(0, timeout=5.0)
        assert jpeg is not None and (jpeg.w, jpeg.h) == (W, H)
        assert node.loops[0].counters["decodes"] > 0
        assert node.loops[0].counters["h264_encodes"] == 0


def test_config_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        camera(device="/dev/video0", fourcc="H264", passthrough=False)
    assert err.value.path == "source.passthrough"
    path = tmp_path / "node.toml"
    path.write_text('[[node.cameras]]\nid = 0\n[node.cameras.source]\nkind = "v4l2"\n'
                    'device = "/dev/video0"\nfourcc = "H.264"\n')
    assert cli.main(["node", "--config", str(path)]) == 2
    assert "node.cameras[0].source.fourcc" in capsys.readouterr().err
