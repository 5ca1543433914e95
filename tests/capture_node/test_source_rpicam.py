"""The rpicam source against a fake rpicam-vid: as a TCP server, and as a supervised program."""

from __future__ import annotations

import logging
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources import rpicam
from camfabric.protocol.errors import ConfigError
from camfabric.protocol.jpeg import decode_jpeg, is_complete_jpeg
from tests.fakes.rpicam_tcp import RpicamTcpServer, numbered_jpegs

FAKE_PROGRAM = Path(__file__).resolve().parents[1] / "fakes" / "rpicam_tcp.py"


def camera(**source) -> CameraConfig:
    return CameraConfig(id=0, resolution=(160, 120), fps=30, source={"kind": "rpicam", **source})


def source_for(cam: CameraConfig) -> rpicam.RpicamSource:
    return rpicam.create(cam.options, cam)


@pytest.fixture
def fake_rpicam_vid(tmp_path: Path) -> Path:
    """An executable named rpicam-vid that runs the fake with the flags it was given."""
    program = tmp_path / "rpicam-vid"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_PROGRAM}" "$@"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_frames_pass_through_whole_despite_split_writes_garbage_and_truncation():
    jpegs = numbered_jpegs(8)
    with RpicamTcpServer(jpegs, fps=200) as server:
        server.split_writes = True
        source = source_for(camera(spawn=False, port=server.port))
        source.open()
        try:
            received = []
            for i in range(40):
                if i % 5 == 1:
                    server.garbage_next()
                if i % 5 == 3:
                    server.truncate_next()
                capture = source.read(timeout=2.0)
                received.append(capture.jpeg)
                assert (capture.w, capture.h) == (160, 120)
                assert capture.image is None  # passed through, not decoded
        finally:
            source.close()
    assert server.cut, "the server cut some frames short"
    for jpeg in received:
        assert is_complete_jpeg(jpeg)
        assert jpeg in jpegs  # byte for byte one of the frames sent whole
        decode_jpeg(jpeg)


def read_like_the_capture_loop(source, count: int, timeout: float = 5.0) -> tuple[list[bytes], list[str]]:
    """Read `count` frames, closing and reopening on SourceError as the node's loop does."""
    frames, errors = [], []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < deadline, f"only {len(frames)} frames; errors: {errors}"
        try:
            frames.append(source.read(timeout=1.0).jpeg)
        except SourceError as exc:
            errors.append(str(exc))
            source.close()
            time.sleep(0.05)
            try:
                source.open()
            except SourceError as exc2:
                errors.append(str(exc2))
    return frames, errors


def test_sender_dying_mid_frame_raises_and_the_source_recovers():
    jpegs = numbered_jpegs(8)
    with RpicamTcpServer(jpegs, fps=100) as server:
        source = source_for(camera(spawn=False, port=server.port, connect_timeout_s=0.5))
        source.open()
        try:
            assert source.read(timeout=2.0).jpeg in jpegs
            server.drop_mid_frame(down_s=0.3)
            with pytest.raises(SourceError, match="connection closed by the sender"):
                for _ in range(100):
                    assert source.read(timeout=2.0).jpeg in jpegs
            frames, errors = read_like_the_capture_loop(source, 10)
        finally:
            source.close()
    assert server.connections >= 2
    assert any("cannot connect to tcp://127.0.0.1" in e for e in errors)  # while it was down
    for jpeg in frames:
        assert jpeg in jpegs


def test_a_silent_sender_is_a_read_timeout():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        source = source_for(camera(spawn=False, port=port, read_timeout_s=0.3))
        source.open()
        conn, _ = listener.accept()
        try:
            with pytest.raises(SourceError, match="no frame within 0.2 s"):
                source.read(timeout=0.2)
            with pytest.raises(SourceError, match="no data for 0.3 s"):
                source.read(timeout=2.0)
        finally:
            conn.close()
            source.close()


def test_interrupt_wakes_a_blocked_read():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        source = source_for(camera(spawn=False, port=port))
        source.open()
        threading.Timer(0.1, source.interrupt).start()
        start = time.monotonic()
        with pytest.raises(SourceError, match="interrupted"):
            source.read(timeout=5.0)
        assert time.monotonic() - start < 1.0
        source.close()


def test_spawned_rpicam_vid_streams_and_logs_its_stderr(fake_rpicam_vid, caplog, reserved_port):
    port = reserved_port
    cam = camera(command=str(fake_rpicam_vid), port=port, args=["--quality", "70"])
    source = source_for(cam)
    caplog.set_level(logging.DEBUG, logger="camfabric.capture_node.sources.rpicam")
    source.open()
    try:
        for _ in range(3):
            capture = source.read(timeout=5.0)
            assert is_complete_jpeg(capture.jpeg)
            assert (capture.w, capture.h) == (160, 120)
        assert source.process is not None and source.process.running
    finally:
        source.close()
    assert not source.process.running
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("starting ") and f"tcp://127.0.0.1:{port}" in m
               and "--width 160 --height 120 --framerate 30" in m for m in messages)
    assert any("rpicam-vid: [0:00:00.100000000]" in m and "libcamera" in m for m in messages)
    progress = [r for r in caplog.records if r.getMessage().startswith("rpicam-vid: #")]
    assert progress and all(r.levelno == logging.DEBUG for r in progress)


def test_spawned_rpicam_vid_crashing_is_restarted_with_backoff(fake_rpicam_vid, tmp_path, monkeypatch,
                                                               caplog, reserved_port):
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_RPICAM_STARTS", str(starts))
    monkeypatch.setenv("FAKE_RPICAM_CRASH_AFTER", "4")
    cam = camera(command=str(fake_rpicam_vid), port=reserved_port, restart_backoff_s=0.3)
    source = source_for(cam)
    source.open()
    try:
        with pytest.raises(SourceError) as failure:
            for _ in range(20):
                assert is_complete_jpeg(source.read(timeout=5.0).jpeg)
        assert "exited with status 1: ERROR: *** camera frontend has timed out! ***" in str(failure.value)
        source.close()
        assert source.process.start_delay() > 0.2  # it died young: the next start waits
        began = time.monotonic()
        source.open()
        assert time.monotonic() - began >= 0.25
        assert is_complete_jpeg(source.read(timeout=5.0).jpeg)
    finally:
        source.close()
    assert len(starts.read_text().splitlines()) == 2
    assert any(r.levelno == logging.WARNING and "camera frontend has timed out" in r.getMessage()
               for r in caplog.records)


def test_no_camera_fails_open_with_rpicam_vids_reason_and_backs_off_more_each_time(
        fake_rpicam_vid, monkeypatch, reserved_port):
    monkeypatch.setenv("FAKE_RPICAM_NO_CAMERA", "1")
    cam = camera(command=str(fake_rpicam_vid), port=reserved_port,
                 restart_backoff_s=0.05, restart_backoff_max_s=0.15)
    source = source_for(cam)
    delays = []
    for _ in range(3):
        with pytest.raises(SourceError, match=r"exited with status 255: ERROR: \*\*\* no cameras available"):
            source.open()
        delays.append(source.process.start_delay())
    assert delays == pytest.approx([0.05, 0.1, 0.15], abs=0.03)


def test_missing_command_is_a_clear_error(closed_port):
    source = source_for(camera(command="/nonexistent/rpicam-vid", port=closed_port))
    with pytest.raises(SourceError, match="not found"):
        source.open()
    source.close()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        camera(host="0.0.0.0")
    assert err.value.path == "source.host"
    with pytest.raises(ConfigError) as err:
        camera(args=["--camera", "1", "--width", "99"])
    assert err.value.path == "source.args[2]"
    with pytest.raises(ConfigError) as err:
        camera(prot=9000)
    assert err.value.path == "source.prot"
    assert camera(spawn=False, host="192.168.1.20").options.host == "192.168.1.20"


def test_command_line_is_the_seed_pipeline():
    cam = camera()
    assert rpicam.rpicam_argv(cam.options, 1920, 1080, 30.0) == [
        "rpicam-vid", "-t", "0", "--codec", "mjpeg", "--listen", "-o", "tcp://127.0.0.1:9000",
        "--width", "1920", "--height", "1080", "--framerate", "30", "--nopreview"]
