"""Shared pieces of the timelapse tests: a real capture node with a synthetic camera, the fake
Moonraker, the service on loopback, and how a test reads back what a user would find."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.subscribers.timelapse.config import TimelapseConfig
from camfabric.subscribers.timelapse.service import TimelapseService
from tests.fakes.moonraker_ws import FakeMoonrakerWS

SETTLE_S = 0.05


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `predicate` until it is truthy; the bound is generous (a loaded 2-core machine), the
    assertion is what it returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def node_config(publish: str = "tcp://127.0.0.1:0", fps: float = 30.0) -> NodeConfig:
    camera = CameraConfig(id=0, name="Printer", resolution=(160, 120), fps=fps)
    return NodeConfig(name="printer-pi", publish=publish, cameras=(camera,))


@pytest.fixture
def node(zmq_context) -> Iterator[CaptureNode]:
    node = CaptureNode(node_config(), context=zmq_context).start()
    yield node
    node.stop()


@pytest.fixture
def moonraker() -> Iterator[FakeMoonrakerWS]:
    with FakeMoonrakerWS() as fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def make_service(tmp_path, zmq_context):
    services: list[TimelapseService] = []

    def make(endpoint: str, moonraker_url: str, **settings: Any) -> TimelapseService:
        values = {"nodes": [endpoint], "moonraker": moonraker_url, "publish": "tcp://127.0.0.1:0",
                  "output_dir": tmp_path / "timelapse", "settle_s": SETTLE_S, "frame_timeout_s": 2.0,
                  "fps": 10.0, "reconnect_max_s": 0.5, "status_interval_s": 0.2, **settings}
        service = TimelapseService(TimelapseConfig(**values), context=zmq_context, api_key="").start()
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop()


def rendered(service: TimelapseService, count: int = 1) -> list[dict[str, Any]]:
    """Wait until `count` prints were rendered (or failed to); newest first."""
    return wait_for(lambda: len(service.renders) >= count and list(service.renders), 30.0,
                    f"{count} render(s)")


def taken(service: TimelapseService) -> int:
    """Frames stored for the print being recorded now (-1 while none is)."""
    recording = service.recording
    return recording.taken if recording is not None else -1


def manifest(service: TimelapseService, entry: dict[str, Any]) -> list[dict[str, Any]]:
    path = service.frames_root / f"{entry['print_id']}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_frames(path: Path) -> int:
    """Frames in the video as a player decodes them: ffprobe's count when installed, else
    OpenCV's decoder, frame by frame."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        out = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
                              "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                             capture_output=True, text=True, timeout=60, check=True)
        return int(out.stdout.strip())
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def output_files(service: TimelapseService) -> list[str]:
    return sorted(p.name for p in Path(service.config.output_dir).iterdir() if p.is_file())
