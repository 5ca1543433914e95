"""The real `camfabric prusa-connect` process, fed by real capture nodes, uploading to the fake Connect."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import falcon.testing
import pytest

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Subscriber, topics
from tests.conftest import ANY_PORT, REPO

from .conftest import TOKEN_A, TOKEN_B, TOKEN_C

TOKEN_A2 = "GGGGgggg4444HHHHhhhh"
CAMFABRIC = shutil.which("camfabric", path=str(Path(sys.executable).parent)) or "camfabric"


def start_node(name: str, cams: list[int], context) -> CaptureNode:
    cameras = tuple(CameraConfig(id=cam, name=f"Cam {cam}", resolution=(160, 90), fps=10) for cam in cams)
    return CaptureNode(NodeConfig(name=name, publish=ANY_PORT, cameras=cameras), context=context).start()


def write_config(path: Path, nodes: list[str], publish: str, state_dir: Path, cameras: list[dict],
                 **settings) -> Path:
    lines = ["[prusa_connect]", f'nodes = {nodes!r}'.replace("'", '"'), f'publish = "{publish}"',
             f'state_dir = "{state_dir}"']
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()]
    for camera in cameras:
        lines.append("[[prusa_connect.cameras]]")
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in camera.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


RUNNING: list[Uploader] = []


@pytest.fixture(autouse=True)
def no_uploader_outlives_its_test():
    """A test that fails halfway must not leave its uploader process running."""
    yield
    while RUNNING:
        uploader = RUNNING.pop()
        if uploader.proc.poll() is None:
            uploader.proc.kill()
            uploader.proc.wait(2)


class Uploader:
    """`camfabric prusa-connect` as a child process, its stderr kept in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [CAMFABRIC, "prusa-connect", "--config", str(config), "--log-level", "DEBUG"],
            stdout=self._log, stderr=self._log, cwd=REPO, env={**os.environ, **(env or {})})
        RUNNING.append(self)

    def stop(self) -> float:
        """SIGTERM; how long the process took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(2)
            self._log.close()
        return time.monotonic() - started

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class StatusWatch:
    """Subscribes to status/prusa_connect/ and keeps every message seen."""

    def __init__(self, publish: str, context) -> None:
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self.sub = Subscriber(publish, cameras=[], topics_extra=(topics.status("prusa_connect"),),
                              context=context)
        self.sub.add_listener(self._on_message)
        self.sub.start()

    def _on_message(self, msg) -> None:
        with self._lock:
            self.seen.append(msg.state)

    def camera(self, cam: int) -> dict:
        with self._lock:
            return self.seen[-1]["cameras"].get(str(cam), {}) if self.seen else {}

    def wait_for(self, cam: int, state: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.camera(cam).get("state") == state:
                return self.camera(cam)
            time.sleep(0.05)
        raise AssertionError(f"camera {cam} never reached {state!r}; last status {self.camera(cam)}")

    def close(self) -> None:
        self.sub.close()


def gateway_health(node_endpoint: str, publish: str, context) -> dict:
    """What the gateway's /status shows for camera 0 under health.prusa_connect."""
    with FrameCache([node_endpoint], services=[publish], context=context) as cache:
        client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            health = client.simulate_get("/status").json.get("0", {}).get("health", {})
            if "prusa_connect" in health:
                return health["prusa_connect"]
            time.sleep(0.1)
    raise AssertionError("the gateway never showed the uploader's state")


def count(connect, token: str) -> int:
    return len(connect.snapshots(token))


def wait_uploads(connect, token: str, n: int, timeout: float = 6.0) -> None:
    assert connect.wait_for(lambda: count(connect, token) >= n, timeout), \
        f"only {count(connect, token)} uploads for one camera, expected {n}"


def test_uploads_a_fresh_frame_at_once_and_keeps_the_fingerprint_across_restarts(
        connect, zmq_context, tmp_path, ipc_endpoint):
    node = start_node("n1", [0], zmq_context)
    seen: dict[str, float] = {}  # sha of every frame the fabric carried -> when we received it
    watch_frames = Subscriber(node.endpoint, cameras=[0], context=zmq_context)
    watch_frames.add_listener(
        lambda m: seen.setdefault(hashlib.sha256(bytes(m.data)).hexdigest(), time.monotonic())
        if hasattr(m, "data") else None)
    watch_frames.start()
    publish = ipc_endpoint  # where each run of the uploader publishes its status
    status = StatusWatch(publish, zmq_context)
    config = write_config(tmp_path / "camfabric.toml", [node.endpoint], publish, tmp_path / "state",
                          [{"cam": 0, "token_env": "TEST_PRUSA_TOKEN", "name": "Bed", "interval_s": 10}],
                          server=connect.url, timeout_s=2.0)
    env = {"TEST_PRUSA_TOKEN": TOKEN_A}
    try:
        first = Uploader(config, tmp_path / "run1.log", env)
        wait_uploads(connect, TOKEN_A, 1, timeout=20)
        [snap] = connect.snapshots(TOKEN_A)
        # The newest frame: at 10 fps the fabric carried it moments before the upload.
        assert snap.time - seen[snap.sha256] < 1.0  # KeyError: not a fabric frame
        assert connect.wait_for(lambda: connect.infos(TOKEN_A), 5)
        info = connect.infos(TOKEN_A)[0].info["config"]
        assert info["name"] == "Bed" and info["trigger_scheme"] == "TEN_SEC"
        assert info["resolution"] == {"width": 160, "height": 90}

        state = status.wait_for(0, "ok")
        assert state["uploads"] == 1 and state["last_error"] == ""
        assert state["last_upload"] == pytest.approx(time.time(), abs=5)
        assert state["next_attempt"] >= state["last_upload"] + 9
        assert gateway_health(node.endpoint, publish, zmq_context)["state"] == "ok"

        assert first.stop() < 2.0
        assert first.proc.returncode == 0
        deadline = time.monotonic() + 2
        while status.seen[-1]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status.seen[-1]["cameras"] == {}  # the gateway stops showing it as uploading
        fingerprint = connect.bound_fingerprint(TOKEN_A)
        assert 16 <= len(fingerprint) <= 64
        assert fingerprint in (tmp_path / "state" / "prusa_connect_fingerprints.json").read_text()

        # A restart: the first request hangs on a Connect that does not answer, and the
        # process still stops within the limit.
        before = len(connect.requests)
        connect.slow(5.0, times=1)
        second = Uploader(config, tmp_path / "run2.log", env)
        assert connect.wait_for(lambda: connect.faults_left() == 0, 20)  # its first upload now waits
        assert second.stop() < 2.0
        assert second.proc.returncode == 0
        assert connect.wait_for(lambda: len(connect.requests) > before, 8)
        assert {r.fingerprint for r in connect.requests} == {fingerprint}  # never another one
        assert not connect.refused(400)  # never an "Invalid fingerprint"
        assert "Traceback" not in first.output + second.output
        for run in (first, second):
            assert TOKEN_A not in run.output
        assert TOKEN_A not in repr(status.seen)
    finally:
        status.close()
        watch_frames.close()
        node.stop()


def test_a_reload_replaces_only_the_camera_that_changed(connect, zmq_context, tmp_path, ipc_endpoint):
    connect.add_camera(TOKEN_C)
    node1 = start_node("n1", [0, 1], zmq_context)
    node2 = start_node("n2", [2], zmq_context)
    publish = ipc_endpoint  # where each run of the uploader publishes its status
    status = StatusWatch(publish, zmq_context)
    cameras = [{"cam": 0, "token": TOKEN_A, "interval_s": 10},
               {"cam": 1, "token": TOKEN_B, "interval_s": 10},
               {"cam": 2, "token_env": "TEST_TOKEN_C", "interval_s": 10}]
    settings = {"server": connect.url, "timeout_s": 1.0}
    config = write_config(tmp_path / "camfabric.toml", [node1.endpoint, node2.endpoint], publish,
                          tmp_path / "state", cameras, **settings)
    uploader = Uploader(config, tmp_path / "run.log", {"TEST_TOKEN_C": TOKEN_C})
    try:
        for token in (TOKEN_A, TOKEN_B, TOKEN_C):  # each camera's first upload is due at once
            wait_uploads(connect, token, 1, timeout=20)

        # A reload of a broken config is refused; everything keeps running as it was.
        good = config.read_text()
        config.write_text(good + "[[prusa_connect.cameras]]\ncam = 3\n")
        uploader.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reload failed" not in uploader.output and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config reload failed, keeping the running configuration: prusa_connect.cameras[3].token" \
            in uploader.output
        status.wait_for(1, "ok")

        # The user regenerates camera 0's token in Connect, edits the config and reloads: camera 0
        # starts afresh with the same fingerprint and uploads at once; the others are untouched.
        connect.revoke(TOKEN_A)
        connect.add_camera(TOKEN_A2)
        cameras[0]["token"] = TOKEN_A2
        write_config(config, [node1.endpoint, node2.endpoint], publish, tmp_path / "state", cameras,
                     **settings)
        uploader.proc.send_signal(signal.SIGHUP)
        wait_uploads(connect, TOKEN_A2, 1, timeout=10)
        assert connect.bound_fingerprint(TOKEN_A2) == connect.bound_fingerprint(TOKEN_A)
        status.wait_for(0, "ok")
        # Cameras 1 and 2 were not restarted: a restart uploads at once, which Connect would
        # have refused (429) within 10 s of their last upload.
        assert not connect.refused(429)
        for token in (TOKEN_B, TOKEN_C):
            snaps = connect.snapshots(token)
            assert all(b.time - a.time >= 10 for a, b in zip(snaps, snaps[1:], strict=False))

        assert uploader.stop() < 2.0
        assert uploader.proc.returncode == 0
        output = uploader.output
        assert "Traceback" not in output
        for token in (TOKEN_A, TOKEN_A2, TOKEN_B, TOKEN_C):
            assert token not in output
            assert token not in repr(status.seen)
        assert not connect.errors
    finally:
        if uploader.proc.poll() is None:
            uploader.stop()
        status.close()
        node1.stop()
        node2.stop()


def test_a_config_without_a_token_is_refused_naming_the_key(tmp_path):
    config = write_config(tmp_path / "c.toml", ["tcp://127.0.0.1:5550"], "tcp://127.0.0.1:5561",
                          tmp_path / "state", [{"cam": 0, "name": "Bed"}])
    result = subprocess.run([CAMFABRIC, "prusa-connect", "--config", str(config)], capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2
    assert "prusa_connect.cameras[0].token" in result.stderr
    assert not (tmp_path / "state").exists()


def test_help_shows_an_example_config():
    result = subprocess.run([CAMFABRIC, "prusa-connect", "--help"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0
    assert "[[prusa_connect.cameras]]" in result.stdout and "token_env" in result.stdout
