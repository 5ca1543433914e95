"""The [timelapse] section and `camfabric timelapse --check`: a bad key or value exits 2 naming
the key, before anything starts; a good file says what it will do."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from camfabric import cli
from camfabric.runtime.errors import ConfigError
from camfabric.subscribers.timelapse.config import TimelapseConfig, load_timelapse_config
from tests.conftest import PYTHON, REPO


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """`cli.main` sets up logging for a process (a handler on this test's captured stderr); the
    tests after this one must not log into that closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "camfabric.toml"
    path.write_text("[timelapse]\n" + body)
    return path


def test_the_defaults_follow_moonraker_and_mainsail(monkeypatch, tmp_path):
    monkeypatch.setenv("PRINTER_DATA_DIR", str(tmp_path / "printer_data"))
    config = load_timelapse_config(None)
    assert config.websocket_url == "ws://127.0.0.1:7125/websocket"
    assert config.output_dir == tmp_path / "printer_data" / "timelapse"
    assert (config.camera, config.mode, config.nodes) == (0, "layer", ["tcp://127.0.0.1:5550"])
    assert TimelapseConfig(moonraker="https://printer.lan/").websocket_url == "wss://printer.lan/websocket"


def test_fps_from_a_target_length_stays_within_min_and_max():
    config = TimelapseConfig(target_length_s=10.0, min_fps=5.0, max_fps=30.0)
    assert config.fps_for(200) == 20.0
    assert config.fps_for(20) == 5.0
    assert config.fps_for(2000) == 30.0
    assert TimelapseConfig(fps=24.0).fps_for(200) == 24.0


@pytest.mark.parametrize(("body", "key"), [
    ("camrea = 0\n", "timelapse.camrea"),
    ('mode = "timelapse"\n', "timelapse.mode"),
    ("settle_s = -1\n", "timelapse.settle_s"),
    ('settle_s = "0.5"\n', "timelapse.settle_s"),
    ("fps = 0\n", "timelapse.fps"),
    ('moonraker = "printer.local:7125"\n', "timelapse.moonraker"),
    ("nodes = []\n", "timelapse.nodes"),
    ("min_fps = 40.0\nmax_fps = 30.0\n", "timelapse.min_fps"),
    ('nodes = ["tcp://127.0.0.1:5550", "udp://x"]\n', "timelapse.nodes[1]"),
    ('publish = "127.0.0.1:5562"\n', "timelapse.publish"),
])
def test_a_bad_key_or_value_exits_2_naming_the_key(tmp_path, capsys, body, key):
    path = write(tmp_path, body)
    code = cli.main(["timelapse", "--config", str(path), "--check"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"configuration error: {key}" in err


def test_an_api_key_never_travels_in_clear_beyond_loopback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOONRAKER_API_KEY", "s3cr3t-key-value")
    path = write(tmp_path, 'moonraker = "http://printer.lan:7125"\n')
    assert cli.main(["timelapse", "--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "timelapse.moonraker" in err and "s3cr3t" not in err
    with pytest.raises(ConfigError):
        TimelapseConfig(moonraker="http://printer.lan:7125").api_key({"MOONRAKER_API_KEY": "k"})
    assert TimelapseConfig(moonraker="http://127.0.0.1:7125").api_key({"MOONRAKER_API_KEY": "k"}) == "k"
    assert TimelapseConfig(moonraker="https://printer.lan").api_key({"MOONRAKER_API_KEY": "k"}) == "k"


def test_check_accepts_a_good_file_and_the_command_is_listed(tmp_path):
    path = write(tmp_path, f'camera = 2\nmode = "hyperlapse"\ninterval_s = 5\noutput_dir = "{tmp_path}"\n')
    out = subprocess.run([PYTHON, "-m", "camfabric.cli", "timelapse", "--config", str(path), "--check"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "[timelapse] is valid (camera 2, hyperlapse mode" in out.stdout
    assert cli.SUBCOMMANDS["timelapse"][1] == cli.load_command("timelapse").HELP


def test_check_refuses_h264_without_pyav(tmp_path, capsys):
    from camfabric.subscribers.timelapse.render import have_pyav

    path = write(tmp_path, f'codec = "h264"\noutput_dir = "{tmp_path}"\n')
    code = cli.main(["timelapse", "--config", str(path), "--check"])
    out = capsys.readouterr()
    if have_pyav():
        assert code == 0 and "h264" in out.out
    else:
        assert code == 2 and "timelapse.codec" in out.err and "PyAV" in out.err
