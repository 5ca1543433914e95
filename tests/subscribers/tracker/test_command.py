"""`camfabric tracker` as a user runs it: a config file, a World on its endpoint, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time

import pytest

from camfabric import cli
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import Subscriber, topics
from tests.conftest import ANY_PORT, ENDPOINT, PYTHON, REPO, Output
from tests.fakes.gemini import FakeGemini

SECRET = "AIzaSyF-subprocess-secret-0123456789abcd"


def test_tracker_runs_publishes_the_world_and_stops_on_sigterm(tmp_path, zmq_context):
    config = tmp_path / "tracker.toml"
    cameras = (CameraConfig(id=0, role="overhead", fps=10, source={"kind": "tabletop", "speed": 0.0}),
               CameraConfig(id=1, role="end_effector", fps=10,
                            source={"kind": "tabletop", "view": "end_effector", "speed": 0.0}))
    env = {"TEST_TRACKER_KEY": SECRET, "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path)}
    seen = [{"label": "red_block", "box_2d": [100, 100, 300, 300]}]
    with FakeGemini(api_key=SECRET, objects=seen) as fake, \
            CaptureNode(NodeConfig(name="cell", publish=ANY_PORT, cameras=cameras),
                        context=zmq_context) as node:
        config.write_text(textwrap.dedent(f"""
            [tracker]
            nodes = ["{node.endpoint}"]
            publish = "{ANY_PORT}"
            markers = {{ "20" = "red_block", "21" = "green_block", "22" = "blue_block" }}
            [[tracker.cameras]]
            id = 0
            role = "overhead"
            interval_s = 0.5
            references = {{ "0" = [30, 30], "1" = [370, 30], "2" = [370, 270], "3" = [30, 270] }}
            [[tracker.cameras]]
            id = 1
            role = "end_effector"
            detector = "gemini"
            interval_s = 2.0
            [tracker.gemini]
            base_url = "{fake.url}"
            api_key_env = "TEST_TRACKER_KEY"
        """))
        proc = subprocess.Popen([PYTHON, "-m", "camfabric.cli", "tracker", "--config", str(config),
                                 "--log-level", "DEBUG"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        output = Output(proc.stderr)
        try:
            world = output.wait_for(f"world on ({ENDPOINT})").group(1)  # port 0: the one it got
            with Subscriber(world, cameras=[], topics_extra=[topics.world()], context=zmq_context) as sub:
                deadline = time.monotonic() + 15
                model = None
                while time.monotonic() < deadline:
                    msg = sub.message(topics.world())
                    model = msg.model if msg else None
                    if model and len(model["objects"]) == 3 and model["camera_frames"].get("1"):
                        break
                    time.sleep(0.1)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = output.text()
    assert model is not None and len(model["objects"]) == 3, err
    assert model["camera_frames"]["1"]["detections"][0]["label"] == "red_block"
    assert proc.returncode == 0, err
    assert took < 2.0
    assert fake.calls >= 1 and all(r.problems == [] for r in fake.requests)
    assert SECRET not in err  # not even at DEBUG, where urllib3 logs every request
    assert world in err and "SIGTERM" in err


def test_a_config_error_exits_2_naming_the_key(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(textwrap.dedent("""
        [tracker]
        markers = { "20" = "cup" }
        [[tracker.cameras]]
        id = 0
        role = "overhead"
        references = { "0" = [0, 0], "1" = [100, 0], "2" = [100, 100] }
    """))
    assert cli.main(["tracker", "--config", str(config)]) == 2
    assert "tracker.cameras[0].references" in capsys.readouterr().err


def test_gemini_without_a_key_exits_2_before_anything_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    config = tmp_path / "gemini.toml"
    config.write_text(textwrap.dedent("""
        [tracker]
        [[tracker.cameras]]
        id = 1
        role = "end_effector"
        detector = "gemini"
    """))
    assert cli.main(["tracker", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "tracker.gemini.api_key" in err and "GEMINI_API_KEY" in err


def test_help_shows_an_example_config(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["tracker", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "[[tracker.cameras]]" in out and "5560" in out
