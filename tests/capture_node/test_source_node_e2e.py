"""A real node with an rpicam camera (fake rpicam-vid) and a synthetic one, seen by a subscriber.

The rpicam stream splits its writes, sends garbage, cuts frames short and finally dies
mid-frame and comes back; the node must reconnect, the synthetic camera must not notice, and
no subscriber may ever receive a JPEG that is not whole.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from camfabric.capture_node.camera import Backoff
from camfabric.capture_node.config import CameraConfig, NodeConfig, load_node_config
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import Subscriber
from camfabric.protocol.errors import ProtocolError
from camfabric.protocol.jpeg import decode_jpeg, is_complete_jpeg
from camfabric.protocol.security import generate_keypair
from camfabric.protocol.wire import Frame
from camfabric.runtime.config import read_toml
from tests.conftest import ANY_PORT
from tests.fakes.rpicam_tcp import RpicamTcpServer, numbered_jpegs

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_rpicam_drop_and_recovery_leaves_the_other_camera_alone_and_no_jpeg_broken(zmq_context):
    jpegs = numbered_jpegs(8, 160, 120)
    synthetic_fps = 20.0
    with RpicamTcpServer(jpegs, fps=30) as server:
        server.split_writes = True
        config = NodeConfig(name="e2e", publish=ANY_PORT, cameras=(
            CameraConfig(id=0, name="Printer", resolution=(160, 120), fps=30,
                         source={"kind": "rpicam", "spawn": False, "port": server.port,
                                 "connect_timeout_s": 0.3}),
            CameraConfig(id=1, name="Side", resolution=(160, 120), fps=synthetic_fps),
        ))
        received: dict[int, list[tuple[float, bytes]]] = {0: [], 1: []}
        problems: list[str] = []
        lock = threading.Lock()

        def check(message) -> None:
            if not isinstance(message, Frame):
                return
            data = bytes(message.data)
            if not is_complete_jpeg(data):
                problems.append(f"cam {message.cam} seq {message.seq}: not a whole JPEG")
            try:
                decode_jpeg(data)
            except ProtocolError as exc:
                problems.append(f"cam {message.cam} seq {message.seq}: {exc}")
            with lock:
                received[message.cam].append((time.monotonic(), data))

        node = CaptureNode(config, context=zmq_context, backoff=Backoff(base_s=0.05, cap_s=0.2))
        with node, Subscriber(node.endpoint, cameras=[0, 1], context=zmq_context) as sub:
            sub.add_listener(check)
            sub.latest(0, timeout=5.0)
            sub.latest(1, timeout=5.0)
            start = time.monotonic()
            for _ in range(3):
                server.garbage_next()
                server.truncate_next()
            time.sleep(0.4)
            connections_before = server.connections
            dropped_at = time.monotonic()
            server.drop_mid_frame(down_s=0.6)
            wait_for(lambda: server.connections > connections_before, 5.0, "the node to reconnect")
            wait_for(lambda: any(t > dropped_at + 0.7 for t, _ in received[0]), 5.0,
                     "rpicam frames after the reconnect")
            time.sleep(0.3)
            end = time.monotonic()
            health = node.health(0)

    assert problems == []
    assert server.cut, "the fake cut frames short"
    cam0 = [data for _, data in received[0]]
    assert cam0 and all(data in jpegs for data in cam0)  # passed through byte for byte
    # The synthetic camera kept its rate through the whole disturbance.
    cam1 = [t for t, _ in received[1] if start <= t <= end]
    assert len(cam1) >= 0.75 * synthetic_fps * (end - start)
    # The outage was seen, counted and recovered from.
    gap = [t for t, _ in received[0] if dropped_at < t < dropped_at + 0.55]
    assert len(gap) <= 2, "frames kept arriving while the sender was down"
    assert health["errors"] >= 1 and health["connected"] is True


def installed_copy(example: Path, root: Path) -> Path:
    """The example as installed: /etc/camfabric under `root`, with the key files it names."""
    text = example.read_text().replace("/etc/camfabric", str(root))
    for name in set(re.findall(r"keys/([\w-]+)\.key", text)):
        generate_keypair(root / "keys", name)
    (root / "authorized").mkdir(exist_ok=True)
    copy = root / example.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_example_configs_load_with_the_real_loaders(example, tmp_path, monkeypatch):
    path = installed_copy(EXAMPLES / example, tmp_path)
    sections = read_toml(path)
    assert sections, f"{example} is empty"
    if "node" in sections:
        config = load_node_config(path)
        assert config.cameras and all(camera.options is not None for camera in config.cameras)
    if "gateway" in sections:
        from camfabric.gateway.config import load_gateway_config

        assert load_gateway_config(path).subscribe
    if "prusa_connect" in sections:
        from camfabric.subscribers.prusa_connect.config import load_config

        monkeypatch.setenv("PRUSA_CONNECT_TOKEN", "abcdefghij0123456789")
        assert load_config(path).cameras


def test_robot_cell_example_is_the_seed_registry(tmp_path):
    config = load_node_config(installed_copy(EXAMPLES / "robot-cell.toml", tmp_path))
    assert [(c.id, c.options.device, c.resolution) for c in config.cameras] == [
        (0, "/dev/video0", (1920, 1080)), (1, "/dev/video4", (1920, 1080)), (2, "/dev/video6", (1920, 1080))]
    assert [c.role for c in config.cameras] == ["overhead", "end_effector", "side_profile"]
