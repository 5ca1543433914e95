"""`camfabric node` and `camfabric keys` as a user runs them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import textwrap
import time

import pytest

from camfabric import cli, protocol
from tests.conftest import ANY_PORT, ENDPOINT, PYTHON, REPO, Output


def test_node_runs_serves_a_frame_and_stops_on_sigterm(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(textwrap.dedent(f"""
        [node]
        name = "subprocess"
        publish = "{ANY_PORT}"
        [[node.cameras]]
        id = 4
        name = "Bench"
        resolution = [320, 240]
        fps = 10
    """))
    proc = subprocess.Popen([PYTHON, "-m", "camfabric.cli", "node", "--config", str(config)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = Output(proc.stderr)
    try:
        endpoint = output.wait_for(f"ready on ({ENDPOINT})").group(1)  # port 0: the one it got
        with protocol.Subscriber(endpoint, cameras=[4]) as sub:
            frame = sub.latest(4, timeout=8.0)
        assert frame.image.shape == (240, 320, 3) and frame.node == "subprocess"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = output.text()
    assert proc.returncode == 0, err
    assert took < 2.0
    assert "'Bench'" in err and "SIGTERM" in err


def test_node_help_shows_an_example_config(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["node", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "[[node.cameras]]" in out and "--config" in out and "demo" in out


def test_keys_writes_a_pair_and_says_how_to_use_it(tmp_path, capsys):
    assert cli.main(["keys", str(tmp_path / "k"), "--name", "cell"]) == 0
    out = capsys.readouterr().out
    public, secret = tmp_path / "k" / "cell.key", tmp_path / "k" / "cell.key_secret"
    assert public.is_file() and secret.is_file()
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert str(public) in out and str(secret) in out
    assert "authorized_keys_dir" in out and "secret_key_file" in out
    before = secret.read_bytes()
    assert cli.main(["keys", str(tmp_path / "k"), "--name", "cell"]) == 1  # never overwritten
    assert secret.read_bytes() == before
    assert cli.main(["keys", str(tmp_path / "k"), "--name", "cell", "--force"]) == 0
    assert secret.read_bytes() != before


def test_the_example_in_node_help_is_a_valid_config(tmp_path):
    from camfabric.capture_node import main
    from camfabric.capture_node.config import load_node_config

    example = main.DESCRIPTION.split("Example configuration (TOML):", 1)[1]
    path = tmp_path / "example.toml"
    path.write_text(textwrap.dedent(example))
    config = load_node_config(path)
    assert config.name == "cell" and config.cameras[0].name == "Overhead"
