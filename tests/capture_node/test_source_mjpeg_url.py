"""The mjpeg_url source against a fake MJPEG HTTP camera."""

from __future__ import annotations

import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources import mjpeg_url
from camfabric.protocol.errors import ConfigError
from camfabric.protocol.jpeg import decode_jpeg, is_complete_jpeg
from tests.capture_node.test_source_rpicam import read_like_the_capture_loop
from tests.fakes.mjpeg_http import STYLES, MjpegHttpServer
from tests.fakes.rpicam_tcp import numbered_jpegs

JPEGS = numbered_jpegs(6)


def source_for(url: str, **options) -> mjpeg_url.MjpegUrlSource:
    cam = CameraConfig(id=3, resolution=(160, 120), fps=30,
                       source={"kind": "mjpeg_url", "url": url, **options})
    return mjpeg_url.create(cam.options, cam)


def read_frames(source, count: int) -> list[bytes]:
    source.open()
    try:
        return [source.read(timeout=2.0).jpeg for _ in range(count)]
    finally:
        source.close()


@pytest.mark.parametrize("content_length", [True, False], ids=["with-length", "without-length"])
@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_boundary_style_with_and_without_content_length(style, content_length):
    with MjpegHttpServer(JPEGS, style=style, content_length=content_length) as server:
        frames = read_frames(source_for(server.url), 8)
    for frame in frames:
        assert frame in JPEGS and is_complete_jpeg(frame)
    assert decode_jpeg(frames[-1]).shape == (120, 160, 3)


def test_chunked_transfer_encoding():
    with MjpegHttpServer(JPEGS, chunked=True, content_length=False) as server:
        frames = read_frames(source_for(server.url), 5)
    assert all(frame in JPEGS for frame in frames)


def test_a_lying_content_length_falls_back_to_marker_scanning():
    with MjpegHttpServer(JPEGS) as server:
        source = source_for(server.url)
        source.open()
        try:
            server.lie_about_length_next()
            frames = [source.read(timeout=2.0).jpeg for _ in range(8)]
        finally:
            source.close()
    assert all(frame in JPEGS for frame in frames)
    assert source.parser.trust_length is False


def test_drop_mid_frame_raises_and_reconnects():
    with MjpegHttpServer(JPEGS) as server:
        source = source_for(server.url)
        source.open()
        try:
            assert source.read(timeout=2.0).jpeg in JPEGS
            server.drop_mid_frame()
            with pytest.raises(SourceError, match="stream ended"):
                for _ in range(100):
                    assert source.read(timeout=2.0).jpeg in JPEGS
            frames, errors = read_like_the_capture_loop(source, 5)
        finally:
            source.close()
    assert server.connections == 2
    assert all(frame in JPEGS for frame in frames)


def test_http_errors_and_wrong_content_are_source_errors(closed_port):
    with MjpegHttpServer(JPEGS) as server, pytest.raises(SourceError, match="HTTP 404"):
        source_for(server.url.replace("/stream", "/nope")).open()
    with MjpegHttpServer(JPEGS, content_type="image/jpeg") as server, \
            pytest.raises(SourceError, match="not an MJPEG stream"):
        source_for(server.url).open()
    with pytest.raises(SourceError, match="refused"):
        source_for(f"http://127.0.0.1:{closed_port}/stream").open()


def test_credentials_in_the_url_are_sent_but_never_shown():
    with MjpegHttpServer(JPEGS, username="admin", password="s3cret") as server:
        url = server.url.replace("http://", "http://admin:s3cret@")
        source = source_for(url)
        assert source.device == server.url.replace("http://", "http://admin:***@")
        assert read_frames(source, 2)[0] in JPEGS
        bad = source_for(server.url.replace("http://", "http://admin:wrong@"))
        with pytest.raises(SourceError) as err:
            bad.open()
    assert "HTTP 401" in str(err.value) and "wrong" not in str(err.value)


def test_a_stalled_stream_times_out():
    with MjpegHttpServer(JPEGS, fps=0.5) as server:
        source = source_for(server.url, read_timeout_s=0.3)
        source.open()
        try:
            assert source.read(timeout=2.0).jpeg in JPEGS
            with pytest.raises(SourceError, match="no frame within 0.1 s"):
                source.read(timeout=0.1)
            with pytest.raises(SourceError, match="no data for 0.3 s"):
                source.read(timeout=2.0)
        finally:
            source.close()


def test_parser_fed_byte_by_byte():
    body = b"\r\n" + b"".join(b"--x\r\nContent-Type: image/jpeg\r\n\r\n" + j + b"\r\n" for j in JPEGS[:3])
    parser = mjpeg_url.MultipartJpegParser()
    frames = []
    for i in range(len(body)):
        frames += parser.feed(body[i : i + 1])
    assert frames == JPEGS[:3]


def test_config_checks_the_url():
    for url, why in [("rtsp://cam/stream", "http:// or https://"), ("http:///x", "no host"),
                     ("http://cam:99999/", "bad port")]:
        with pytest.raises(ConfigError, match=why) as err:
            source_for(url)
        assert err.value.path == "source.url"
    with pytest.raises(ConfigError) as err:
        source_for("http://u:pw@cam/", timeout=3)
    assert err.value.path == "source.timeout"
