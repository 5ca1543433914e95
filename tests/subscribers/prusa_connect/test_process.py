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
from tests.conftest import REPO, unused_tcp_port

from .conftest import TOKEN_A, TOKEN_B, TOKEN_C

TOKEN_A2 = "GGGGgggg4444HHHHhhhh"
CAMFABRIC = shutil.which("camfabric", path=str(Path(sys.executable).parent)) or "camfabric"


def endpoint() -> str:
    return f"tcp://127.0.0.1:{unused_tcp_port()}"


def start_node(name: str, cams: list[int], context) -> CaptureNode:
    cameras = tuple(CameraConfig(id=cam, name=f"Cam {cam}", resolution=(160, 90), fps=10) for cam in cams)
    return CaptureNode(NodeConfig(name=name, publish=endpoint(), cameras=cameras), context=context).start()


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


def test_uploads_the_newest_frame_at_the_interval_and_keeps_the_fingerprint_across_restarts(
        connect, zmq_context, tmp_path):
    node = start_node("n1", [0], zmq_context)
    seen: dict[str, float] = {}  # sha of every frame the fabric carried -> when we received it
    watch_frames = Subscriber(node.endpoint, cameras=[0], context=zmq_context)
    watch_frames.add_listener(
        lambda m: seen.setdefault(hashlib.sha256(bytes(m.data)).hexdigest(), time.monotonic())
        if hasattr(m, "data") else None)
    watch_frames.start()
    publish = endpoint()
    status = StatusWatch(publish, zmq_context)
    config = write_config(tmp_path / "camfabric.toml", [node.endpoint], publish, tmp_path / "state",
                          [{"cam": 0, "token_env": "TEST_PRUSA_TOKEN", "name": "Bed", "interval_s": 0.5}],
                          server=connect.url, timeout_s=2.0)
    env = {"TEST_PRUSA_TOKEN": TOKEN_A}
    try:
        first = Uploader(config, tmp_path / "run1.log", env)
        wait_uploads(connect, TOKEN_A, 6, timeout=8)
        snaps = connect.snapshots(TOKEN_A)
        gaps = [b.time - a.time for a, b in zip(snaps[1:], snaps[2:], strict=False)]
        # The uploader keeps a fixed cadence: after an upload delayed by a busy machine the
        # next one comes sooner, so single gaps vary and their mean is the interval.
        assert all(0.2 <= gap <= 1.5 for gap in gaps), gaps
        assert 0.45 <= sum(gaps) / len(gaps) <= 0.7, gaps
        assert len({s.sha256 for s in snaps}) == len(snaps)  # every upload a new frame
        lags = sorted(snap.time - seen[snap.sha256] for snap in snaps)  # KeyError: not a fabric frame
        # ... and the newest one: at 10 fps the fabric carried it moments before the upload.
        assert lags[-1] < 1.0 and lags[len(lags) // 2] < 0.3, lags
        [info] = connect.infos(TOKEN_A)[:1]
        assert info.info["config"]["name"] == "Bed"
        assert info.info["config"]["resolution"] == {"width": 160, "height": 90}

        state = status.wait_for(0, "ok")
        assert state["uploads"] >= 1 and state["last_error"] == ""
        assert state["last_upload"] == pytest.approx(time.time(), abs=5)
        assert state["next_attempt"] >= state["last_upload"]
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

        before = count(connect, TOKEN_A)
        second = Uploader(config, tmp_path / "run2.log", env)
        wait_uploads(connect, TOKEN_A, before + 2)
        connect.slow(5.0, times=3)
        time.sleep(0.7)  # an upload is now waiting on a Connect that does not answer
        assert second.stop() < 2.0
        assert second.proc.returncode == 0
        assert {r.fingerprint for r in connect.requests} == {fingerprint}
        assert all(r.ok for r in connect.requests)  # never an "Invalid fingerprint"
        assert "Traceback" not in first.output + second.output
        for run in (first, second):
            assert TOKEN_A not in run.output
        assert TOKEN_A not in repr(status.seen)
    finally:
        status.close()
        watch_frames.close()
        node.stop()


def test_faults_stop_only_the_camera_they_hit_and_a_reload_brings_it_back(connect, zmq_context, tmp_path):
    connect.add_camera(TOKEN_C)
    node1 = start_node("n1", [0, 1], zmq_context)
    node2 = start_node("n2", [2], zmq_context)
    publish = endpoint()
    status = StatusWatch(publish, zmq_context)
    cameras = [{"cam": 0, "token": TOKEN_A, "interval_s": 0.5},
               {"cam": 1, "token": TOKEN_B, "interval_s": 0.5},
               {"cam": 2, "token_env": "TEST_TOKEN_C", "interval_s": 0.5}]
    settings = {"server": connect.url, "timeout_s": 1.0, "max_age_s": 1.0, "retry_max_s": 1.0}
    config = write_config(tmp_path / "camfabric.toml", [node1.endpoint, node2.endpoint], publish,
                          tmp_path / "state", cameras, **settings)
    uploader = Uploader(config, tmp_path / "run.log", {"TEST_TOKEN_C": TOKEN_C})
    try:
        for token in (TOKEN_A, TOKEN_B, TOKEN_C):
            wait_uploads(connect, token, 2)

        # An outage with Retry-After, then recovery: every camera comes back, none is lost.
        connect.outage(503, retry_after=1)
        outage_started = time.monotonic()
        time.sleep(1.5)
        connect.end_outage()
        failed = [r for r in connect.requests if r.status == 503]
        for token in (TOKEN_A, TOKEN_B, TOKEN_C):
            attempts = [r for r in failed if r.token == token]
            assert 1 <= len(attempts) <= 3, "backoff with Retry-After 1 s allows about one try a second"
        marks = {t: count(connect, t) for t in (TOKEN_A, TOKEN_B, TOKEN_C)}
        for token in (TOKEN_A, TOKEN_B, TOKEN_C):
            wait_uploads(connect, token, marks[token] + 2, timeout=5)
        assert time.monotonic() - outage_started < 8

        # A dead camera: its node goes away; that camera stops, the others carry on.
        node2.stop()
        dead_mark = count(connect, TOKEN_C)
        stale = status.wait_for(2, "stale", timeout=5)
        assert "stopped delivering" in stale["last_error"]
        marks = {t: count(connect, t) for t in (TOKEN_A, TOKEN_B)}
        wait_uploads(connect, TOKEN_A, marks[TOKEN_A] + 2)
        wait_uploads(connect, TOKEN_B, marks[TOKEN_B] + 2)
        assert count(connect, TOKEN_C) <= dead_mark + 1  # at most a frame already on its way

        # A revoked token: that camera stops with what to do; the other keeps uploading.
        connect.revoke(TOKEN_A)
        stopped = status.wait_for(0, "stopped", timeout=5)
        assert "401" in stopped["last_error"] and "regenerate the token" in stopped["last_error"]
        refused_at = max(r.time for r in connect.requests if r.token == TOKEN_A)
        mark_b = count(connect, TOKEN_B)
        wait_uploads(connect, TOKEN_B, mark_b + 3)
        assert not [r for r in connect.requests if r.token == TOKEN_A and r.time > refused_at]
        assert "regenerate the token" in uploader.output

        # A reload of a broken config is refused; everything keeps running as it was.
        config.write_text(config.read_text() + "[[prusa_connect.cameras]]\ncam = 3\n")
        mark_b = count(connect, TOKEN_B)
        uploader.proc.send_signal(signal.SIGHUP)
        wait_uploads(connect, TOKEN_B, mark_b + 2)
        assert "config reload failed, keeping the running configuration: prusa_connect.cameras[3].token" \
            in uploader.output
        assert status.camera(0)["state"] == "stopped"

        # The user regenerates the token, edits the config and sends SIGHUP.
        connect.add_camera(TOKEN_A2)
        cameras[0]["token"] = TOKEN_A2
        write_config(config, [node1.endpoint, node2.endpoint], publish, tmp_path / "state", cameras,
                     **settings)
        uploader.proc.send_signal(signal.SIGHUP)
        wait_uploads(connect, TOKEN_A2, 2)
        assert connect.bound_fingerprint(TOKEN_A2) == connect.bound_fingerprint(TOKEN_A)
        status.wait_for(0, "ok")
        assert status.camera(1)["state"] in ("ok", "waiting_for_frame")

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
