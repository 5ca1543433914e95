"""Smoke tests of examples/: each script run as a user would, against a fabric started here
(a capture node with the cell's three cameras and a gateway, on ports of their choosing)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import pytest
import requests

from camfabric.capture_node.config import NodeConfig, demo_cameras
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import decode_jpeg

from ..conftest import ANY_PORT, PYTHON, REPO

EXAMPLES = REPO / "examples"
W, H, FPS = 160, 120, 15


@dataclass
class Fabric:
    endpoint: str
    url: str


@pytest.fixture(scope="module")
def fabric() -> Iterator[Fabric]:
    config = NodeConfig(name="cell", publish=ANY_PORT, cameras=demo_cameras(W, H, FPS))
    with CaptureNode(config) as node:
        gateway = Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,))).start()
        try:
            deadline = time.monotonic() + 8
            while not (len(gateway.cache.camera_ids()) == 3 and gateway.cache.latest(2)):
                assert time.monotonic() < deadline, "the fabric did not start"
                time.sleep(0.05)
            yield Fabric(node.endpoint, gateway.url)
        finally:
            gateway.stop()


def run(script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_newest_frames_prints_numpy_frames_with_their_age(fabric):
    done = run("newest_frames.py", fabric.endpoint, "--cameras", "0", "1", "2", "--count", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 6
    for line in lines:
        found = re.fullmatch(r"camera (\d) seq (\d+): \(120, 160, 3\) mean [\d.]+, (\d+) ms old", line)
        assert found, line
        assert int(found.group(3)) < 1000


def test_synced_triple_saves_three_frames_captured_together(fabric, tmp_path):
    out = tmp_path / "shots"
    done = run("synced_triple.py", fabric.endpoint, "--out", str(out), "--tolerance-ms", "67")
    assert done.returncode == 0, done.stderr
    note = json.loads((out / "set.json").read_text())
    assert note["spread_ms"] <= 67 and sorted(note["cameras"]) == ["0", "1", "2"]
    for cam in ("0", "1", "2"):
        image = cv2.imread(str(out / note["cameras"][cam]["file"]))
        assert image is not None and image.shape == (H, W, 3)
        assert note["cameras"][cam]["age_ms"] < 1000


def test_synced_triple_names_a_camera_nobody_has(fabric, tmp_path):
    done = run("synced_triple.py", fabric.endpoint, "--cameras", "0", "7", "--out", str(tmp_path),
               "--timeout", "1")
    assert done.returncode == 1 and "camera 7" in done.stderr
    assert not (tmp_path / "set.json").exists()


def start_main_server(gateway_url: str) -> tuple[subprocess.Popen, str]:
    """The main server on port 0; its URL as it prints it once it listens."""
    proc = subprocess.Popen([PYTHON, str(EXAMPLES / "main_server.py"), "--gateway", gateway_url,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r"on (http://\S+/) proxying", line)
    if found is None:
        proc.kill()
        raise AssertionError(f"the main server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, found.group(1)


def test_main_server_proxies_the_seed_routes_with_cam_snap(fabric):
    proc, url = start_main_server(fabric.url)
    try:
        cameras = requests.get(url + "cameras", timeout=5)
        assert cameras.status_code == 200 and sorted(cameras.json()) == ["0", "1", "2"]
        snap = requests.get(url + "snap/1", timeout=5)
        assert snap.status_code == 200 and snap.headers["Content-Type"] == "image/jpeg"
        assert decode_jpeg(snap.content).shape == (H, W, 3)
        latest = requests.get(url + "latest/2", timeout=5)
        assert latest.status_code == 200 and 0 <= int(latest.headers["X-Frame-Age-Ms"]) < 1000
        unknown = requests.get(url + "snap/9", timeout=5)
        assert unknown.status_code == 404 and "unknown camera 9" in unknown.json()["description"]
    finally:
        proc.kill()
        proc.wait(5)


def test_main_server_passes_the_gateways_refusal_through_without_echoing_the_path(fabric):
    proc, url = start_main_server(fabric.url)
    try:
        for path in ("snap/" + "9" * 5000, "latest/" + "1" * 40):
            answer = requests.get(url + path, timeout=5)
            assert answer.status_code == 400, (answer.status_code, answer.text[:300])
            assert len(answer.content) < 600 and "9" * 30 not in answer.text
            assert "digits" in answer.json()["description"]  # the gateway's own reason
    finally:
        proc.kill()
        proc.wait(5)


def test_main_server_answers_head_as_get_without_the_body(fabric):
    proc, url = start_main_server(fabric.url)
    try:
        for path in ("cameras", "snap/1", "latest/2"):
            got = requests.get(url + path, timeout=5)
            head = requests.head(url + path, timeout=5)
            assert head.status_code == got.status_code == 200, path
            assert head.headers["Content-Type"] == got.headers["Content-Type"] and head.content == b""
    finally:
        proc.kill()
        proc.wait(5)


def test_main_server_answers_502_when_the_camera_service_is_gone(closed_port):
    proc, url = start_main_server(f"http://127.0.0.1:{closed_port}")
    try:
        snap = requests.get(url + "snap/0", timeout=5)
        assert snap.status_code == 502 and "cannot reach the gateway" in snap.json()["description"]
    finally:
        proc.kill()
        proc.wait(5)
