"""The V4L2 source's decisions: config → capture properties, FOURCC → passthrough, buffer → JPEG.

Opening a real camera needs a device this machine does not have; the error paths that need
no camera (missing device, a device node that is not a camera) are exercised for real.
"""

from __future__ import annotations

import errno

import cv2
import numpy as np
import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources import v4l2
from camfabric.protocol.errors import ConfigError, ProtocolError
from camfabric.protocol.jpeg import decode_jpeg, encode_jpeg, is_complete_jpeg
from tests.fakes.rpicam_tcp import numbered_jpegs

JPEG = numbered_jpegs(1, 64, 48)[0]


def camera(**source) -> CameraConfig:
    return CameraConfig(id=0, resolution=(1920, 1080), fps=30, source={"kind": "v4l2", **source})


def test_config_becomes_properties_in_the_order_v4l2_needs():
    cam = camera(device="/dev/video0", controls={"autofocus": 0, "focus": 30})
    props = v4l2.capture_properties(cam.options, 1920, 1080, 30.0)
    assert props == [
        (cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter_fourcc(*"MJPG"))),
        (cv2.CAP_PROP_FRAME_WIDTH, 1920.0),
        (cv2.CAP_PROP_FRAME_HEIGHT, 1080.0),
        (cv2.CAP_PROP_FPS, 30.0),
        (cv2.CAP_PROP_BUFFERSIZE, 1.0),
        (cv2.CAP_PROP_AUTOFOCUS, 0.0),
        (cv2.CAP_PROP_FOCUS, 30.0),
    ]
    yuyv = camera(device="/dev/video4", fourcc="YUYV", buffers=2).options
    assert v4l2.capture_properties(yuyv, 640, 480, 15)[0] == (cv2.CAP_PROP_FOURCC,
                                                               float(cv2.VideoWriter_fourcc(*"YUYV")))
    assert v4l2.capture_properties(yuyv, 640, 480, 15)[4] == (cv2.CAP_PROP_BUFFERSIZE, 2.0)


@pytest.mark.parametrize(("requested", "negotiated", "passthrough", "delivery", "reason"), [
    ("MJPG", "MJPG", True, "jpeg", "passing its JPEGs through"),
    ("MJPG", "JPEG", True, "jpeg", "passing its JPEGs through"),
    ("MJPG", "MJPG", False, "decoded", "passthrough is off"),
    ("MJPG", "YUYV", True, "decoded", "asked for MJPG, camera delivers YUYV: capturing raw"),
    ("MJPG", "", True, "decoded", "an unknown format"),
    ("YUYV", "YUYV", True, "decoded", "camera delivers YUYV: converting to BGR"),
])
def test_passthrough_decision(requested, negotiated, passthrough, delivery, reason):
    got, why = v4l2.decide_delivery(requested, negotiated, passthrough)
    assert got == delivery
    assert reason in why


def test_raw_mode_switch_is_tried_before_the_old_one():
    assert v4l2.raw_mode_properties() == [(cv2.CAP_PROP_CONVERT_RGB, 0.0), (cv2.CAP_PROP_FORMAT, -1.0)]


def test_fourcc_round_trip():
    for name in ("MJPG", "YUYV", "NV12", "H264"):
        assert v4l2.fourcc_name(v4l2.fourcc_code(name)) == name
    assert v4l2.fourcc_name(0) == "" and v4l2.fourcc_name(-1) == ""


def test_a_padded_buffer_is_trimmed_to_the_jpeg():
    buffer = np.frombuffer(JPEG + bytes(4000), np.uint8).reshape(1, -1)  # how OpenCV hands it over
    assert v4l2.jpeg_from_buffer(buffer) == JPEG


def strip_huffman_tables(jpeg: bytes) -> bytes:
    out, i = bytearray(jpeg[:2]), 2
    while True:
        marker, length = jpeg[i + 1], (jpeg[i + 2] << 8) | jpeg[i + 3]
        if marker != 0xC4:
            out += jpeg[i : i + 2 + length]
        if marker == 0xDA:
            return bytes(out + jpeg[i + 2 + length :])
        i += 2 + length


def test_mjpeg_without_huffman_tables_gets_the_standard_ones():
    original = encode_jpeg(np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    bare = strip_huffman_tables(original)
    assert b"\xff\xc4" not in bare[: bare.index(b"\xff\xda")]
    fixed = v4l2.jpeg_from_buffer(bare)
    assert is_complete_jpeg(fixed)
    assert np.array_equal(decode_jpeg(fixed), decode_jpeg(original))


def test_broken_buffers_are_refused():
    with pytest.raises(ProtocolError, match="SOI"):
        v4l2.jpeg_from_buffer(b"\x00\x01" + JPEG)
    with pytest.raises(ProtocolError, match="no JPEG EOI"):
        v4l2.jpeg_from_buffer(JPEG[:-200])
    with pytest.raises(ProtocolError, match="not a well-formed JPEG"):
        v4l2.jpeg_from_buffer(JPEG[:300] + JPEG)


def test_v4l2_structs_parse():
    raw = v4l2._FMTDESC.pack(0, 1, 1, b"Motion-JPEG\x00", v4l2.fourcc_code("MJPG"), 0)
    assert v4l2.parse_fmtdesc(raw) == ("MJPG", "Motion-JPEG")
    assert v4l2.parse_frmsize(v4l2._FRMSIZE.pack(0, 0, 1, 1920, 1080, 0, 0, 0, 0)) == [(1920, 1080)]
    stepwise = v4l2._FRMSIZE.pack(0, 0, 3, 16, 4096, 16, 16, 2160, 8)
    assert v4l2.parse_frmsize(stepwise) == [(16, 16), (4096, 2160)]
    assert v4l2._FMTDESC.size == 64 and v4l2._FRMSIZE.size == 44  # the kernel's struct sizes


def test_config_errors_name_the_key():
    for source, path in [({"device": "video0"}, "source.device"),
                         ({"device": "/dev/video0", "fourcc": "MJPEG"}, "source.fourcc"),
                         ({"device": "/dev/video0", "controls": {"focuss": 1}}, "source.controls.focuss"),
                         ({"device": "/dev/video0", "buffers": 0}, "source.buffers"),
                         ({}, "source.device")]:
        with pytest.raises(ConfigError) as err:
            camera(**source)
        assert err.value.path == path


def test_a_missing_device_is_a_source_error_and_a_probe_report():
    cam = camera(device="/dev/video-camfabric-missing")
    source = v4l2.create(cam.options, cam)
    with pytest.raises(SourceError, match="no such device"):
        source.open()
    report = source.probe()
    assert not report.opened and "no such device" in report.error
    assert report.details["enumerate_error"]


def test_a_device_node_that_is_not_a_camera_is_refused():
    cam = camera(device="/dev/null")
    source = v4l2.create(cam.options, cam)
    with pytest.raises(SourceError, match="cannot open"):
        source.open()
    source.close()
    with pytest.raises(OSError) as err:
        v4l2.enumerate_formats("/dev/null")
    assert err.value.errno == errno.ENOTTY  # not a V4L2 device


def test_device_paths_become_what_opencv_opens(tmp_path):
    link = tmp_path / "usb-046d_Logitech_BRIO-video-index0"
    link.symlink_to("/dev/video4")  # how /dev/v4l/by-id links look
    assert v4l2.opencv_target(str(link)) == 4
    assert v4l2.opencv_target("/dev/video0") == 0
    assert v4l2.opencv_target("/dev/null") == "/dev/null"
