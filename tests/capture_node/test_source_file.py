"""The file source: a video written with cv2.VideoWriter, and a folder of images, looping."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources import file as file_source
from camfabric.protocol.errors import ConfigError
from camfabric.protocol.jpeg import encode_jpeg, is_complete_jpeg


def solid(value: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """Five frames of increasing brightness, at 25 fps."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(solid(40 * i + 20))
    writer.release()
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    (images / "b.jpg").write_bytes(encode_jpeg(solid(100)))
    (images / "a.png").write_bytes(cv2.imencode(".png", solid(50, 32, 24))[1].tobytes())
    (images / "c.jpeg").write_bytes(encode_jpeg(solid(200)))
    (images / "notes.txt").write_text("not an image")
    return images


def source_for(path: Path, fps: float = 200, **options) -> file_source.FileSource:
    cam = CameraConfig(id=0, resolution=(64, 48), fps=fps,
                       source={"kind": "file", "path": str(path), **options})
    return file_source.create(cam.options, cam)


def brightness(capture) -> int:
    image = capture.image if capture.image is not None else cv2.imdecode(
        np.frombuffer(capture.jpeg, np.uint8), cv2.IMREAD_COLOR)
    return int(image.mean())


def test_video_loops(video):
    source = source_for(video)
    source.open()
    try:
        levels = [brightness(source.read(timeout=1.0)) for _ in range(12)]
    finally:
        source.close()
    expected = [20, 60, 100, 140, 180]
    assert [min(expected, key=lambda e, v=v: abs(e - v)) for v in levels] == (expected * 3)[:12]
    assert all(abs(v - e) < 8 for v, e in zip(levels, (expected * 3)[:12], strict=True))
    assert source.loops == 2


def test_video_without_loop_ends_with_an_error(video):
    source = source_for(video, loop=False)
    source.open()
    for _ in range(5):
        source.read(timeout=1.0)
    with pytest.raises(SourceError, match="end of file"):
        source.read(timeout=1.0)
    source.close()


def test_image_folder_in_name_order_jpegs_passed_through(folder):
    source = source_for(folder)
    source.open()
    try:
        captures = [source.read(timeout=1.0) for _ in range(6)]
    finally:
        source.close()
    assert [brightness(c) for c in captures] == [50, 100, 200, 50, 100, 200]
    png, jpg = captures[0], captures[1]
    assert png.image is not None and (png.w, png.h) == (32, 24)
    assert jpg.jpeg == (folder / "b.jpg").read_bytes() and jpg.image is None
    assert is_complete_jpeg(jpg.jpeg) and (jpg.w, jpg.h) == (64, 48)


def test_paced_at_the_camera_fps(folder):
    source = source_for(folder, fps=50)
    source.open()
    try:
        start = time.monotonic()
        for _ in range(11):
            source.read(timeout=1.0)
        elapsed = time.monotonic() - start
    finally:
        source.close()
    assert 0.19 <= elapsed < 0.5  # ten periods of 20 ms


def test_paced_at_the_files_own_fps(video):
    source = source_for(video, fps=200, pace="file")
    source.open()
    try:
        start = time.monotonic()
        for _ in range(6):
            source.read(timeout=1.0)
        elapsed = time.monotonic() - start
    finally:
        source.close()
    assert source.fps == pytest.approx(25.0)
    assert 0.19 <= elapsed < 0.5  # five periods of 40 ms


def test_a_stall_does_not_cause_a_burst(folder):
    now = [0.0]
    source = file_source.FileSource(source_for(folder).options, fps=10, clock=lambda: now[0])
    source.open()
    source.read(timeout=1.0)
    now[0] = 5.0  # the capture loop was busy for 5 s
    source.read(timeout=1.0)  # due long ago: at once
    with pytest.raises(SourceError, match="due in 0.1 s"):  # then one period later, not a burst
        source.read(timeout=0.05)


def test_probe_reports_size_and_rate(video, folder):
    report = source_for(video, pace="file").probe()
    assert report.opened and report.resolutions == [(64, 48)] and report.details["fps"] == pytest.approx(25)
    report = source_for(folder).probe()
    assert report.opened and report.formats == ["images"]


def test_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        source_for(tmp_path / "missing.mp4")
    assert err.value.path == "source.path"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        source_for(empty).open()
    not_video = tmp_path / "x.mp4"
    not_video.write_text("hello")
    with pytest.raises(SourceError, match="cannot open it as a video"):
        source_for(not_video).open()
