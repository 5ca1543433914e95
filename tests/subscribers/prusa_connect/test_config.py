"""The [prusa_connect] section: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from camfabric import cli
from camfabric.protocol.errors import ConfigError
from camfabric.subscribers.prusa_connect import main
from camfabric.subscribers.prusa_connect.config import (
    DEFAULT_PUBLISH,
    DEFAULT_SERVER,
    default_state_dir,
    load_config,
)

from .conftest import TOKEN_A


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "camfabric.toml"
    path.write_text(text)
    return path


def test_the_example_in_help_is_a_valid_config(tmp_path, monkeypatch):
    example = main.DESCRIPTION.split("Example config (TOML):", 1)[1]
    monkeypatch.setenv("PRUSA_CONNECT_TOKEN_0", TOKEN_A)
    config = load_config(config_file(tmp_path, "\n".join(line[2:] for line in example.splitlines())))
    assert config.server == DEFAULT_SERVER and config.publish == DEFAULT_PUBLISH
    assert [c.cam for c in config.cameras] == [0, 2]
    assert config.cameras[0].token == TOKEN_A and config.cameras[0].interval_s == 10
    assert config.max_age_s == 30 and config.max_bytes == 16 * 1024 * 1024


def test_defaults(tmp_path):
    config = load_config(config_file(tmp_path, f'[[prusa_connect.cameras]]\ncam = 1\ntoken = "{TOKEN_A}"\n'))
    assert config.nodes == ("tcp://127.0.0.1:5550",)
    assert config.timeout_s > 0 and config.cameras[0].interval_s == 10.0
    assert config.state_dir == default_state_dir()


@pytest.mark.parametrize(("text", "key"), [
    ("[[prusa_connect.cameras]]\ncam = 0\n", "prusa_connect.cameras[0].token"),
    ('[[prusa_connect.cameras]]\ncam = 0\ntoken_env = "CAMFABRIC_TEST_UNSET_VAR"\n',
     "prusa_connect.cameras[0].token_env"),
    (f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\ntoken_env = "X"\n',
     "prusa_connect.cameras[0].token"),
    ('[[prusa_connect.cameras]]\ncam = 0\ntoken = "has spaces in it 123"\n',
     "prusa_connect.cameras[0].token"),
    (f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\ninterval_s = 0\n',
     "prusa_connect.cameras[0].interval_s"),
    (f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\nfingerprint = "short"\n',
     "prusa_connect.cameras[0].fingerprint"),
    (f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n[[prusa_connect.cameras]]\ncam = 0\n'
     f'token = "{TOKEN_A}"\n', "prusa_connect.cameras[1].cam"),
    (f'[prusa_connect]\nserver = "http://connect.example.com"\n[[prusa_connect.cameras]]\ncam = 0\n'
     f'token = "{TOKEN_A}"\n', "prusa_connect.server"),
    (f'[prusa_connect]\npublish = "tcp://0.0.0.0:5561"\n[[prusa_connect.cameras]]\ncam = 0\n'
     f'token = "{TOKEN_A}"\n', "prusa_connect.publish"),
    (f'[prusa_connect]\nmax_bytes = 99999999\n[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n',
     "prusa_connect.max_bytes"),
    (f'[prusa_connect]\ntimeout = 3\n[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n',
     "prusa_connect.timeout"),
    ("[prusa_connect]\n", "prusa_connect.cameras"),
    (f'[prusa_connect]\nnodes = ["127.0.0.1:5550"]\n[[prusa_connect.cameras]]\ncam = 0\n'
     f'token = "{TOKEN_A}"\n', "prusa_connect.nodes[0]"),
    (f'[prusa_connect.curve."tcp://10.0.0.5:5550"]\nsecret_key_file = "/k"\nserver_public_key_file = "/n"\n'
     f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n', "prusa_connect.curve.tcp://10.0.0.5:5550"),
    (f'[prusa_connect]\nnodes = ["tcp://10.0.0.5:5550"]\n[prusa_connect.curve."tcp://10.0.0.5:5550"]\n'
     f'secret_key_file = "/nonexistent/k"\nserver_public_key_file = "/n"\n'
     f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n',
     "prusa_connect.curve.tcp://10.0.0.5:5550.secret_key_file"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_config(config_file(tmp_path, text))
    assert info.value.path == key


def test_a_token_is_never_shown_in_a_repr_or_an_error(tmp_path):
    config = load_config(config_file(tmp_path, f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{TOKEN_A}"\n'))
    assert TOKEN_A not in repr(config) and TOKEN_A not in repr(config.cameras[0])
    bad = TOKEN_A[:10] + " " + TOKEN_A[10:]
    with pytest.raises(ConfigError) as info:
        load_config(config_file(tmp_path, f'[[prusa_connect.cameras]]\ncam = 0\ntoken = "{bad}"\n'))
    assert TOKEN_A[:10] not in str(info.value)


def test_plain_http_is_allowed_on_loopback_only(tmp_path):
    text = f'[prusa_connect]\nserver = "http://127.0.0.1:8000/"\n[[prusa_connect.cameras]]\ncam = 0\n' \
           f'token = "{TOKEN_A}"\n'
    assert load_config(config_file(tmp_path, text)).server == "http://127.0.0.1:8000"


def test_state_dir_follows_systemd_then_root_then_the_users_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/camfabric-unit")
    assert default_state_dir() == Path("/var/lib/camfabric-unit")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    import os
    expected = Path("/var/lib/camfabric") if os.geteuid() == 0 else tmp_path / "camfabric"
    assert default_state_dir() == expected


# -- Connect's own rules: refused by --check and at start, exit status 2, the key named -----------

CAMERA = '[[prusa_connect.cameras]]\ncam = 0\n'


@pytest.mark.parametrize(("camera", "key", "why"), [
    (f'token = "{TOKEN_A}"\ninterval_s = 3\n', "prusa_connect.cameras[0].interval_s", "at least 10"),
    (f'token = "{TOKEN_A}"\ninterval_s = 9.99\n', "prusa_connect.cameras[0].interval_s", "at least 10"),
    (f'token = "{TOKEN_A[:19]}"\n', "prusa_connect.cameras[0].token", "19 characters long"),
    (f'token = "{TOKEN_A}x"\n', "prusa_connect.cameras[0].token", "21 characters long"),
    (f'token = "{TOKEN_A[:19]}_"\n', "prusa_connect.cameras[0].token", "other characters"),
    (f'token = "{TOKEN_A[:19]}-"\n', "prusa_connect.cameras[0].token", "other characters"),
    ('token_env = "CAMFABRIC_TEST_SHORT_TOKEN"\n', "prusa_connect.cameras[0].token_env", "19 characters"),
    (f'token = "{TOKEN_A}"\nname = "{"n" * 65}"\n', "prusa_connect.cameras[0].name", "at most 64"),
])
def test_connects_rules_exit_2_naming_the_key(tmp_path, monkeypatch, capsys, camera, key, why):
    monkeypatch.setenv("CAMFABRIC_TEST_SHORT_TOKEN", TOKEN_A[:19])
    path = config_file(tmp_path, f'[prusa_connect]\nstate_dir = "{tmp_path / "state"}"\n' + CAMERA + camera)
    assert cli.main(["prusa-connect", "--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"configuration error: {key}: " in err and why in err
    assert TOKEN_A[:19] not in err  # a malformed token is still mostly a secret


def test_at_start_too_a_rule_of_connect_exits_2_before_anything_runs(tmp_path):
    state = tmp_path / "state"
    path = config_file(tmp_path, f'[prusa_connect]\nstate_dir = "{state}"\n' + CAMERA
                       + f'token = "{TOKEN_A}"\ninterval_s = 3\n')
    result = subprocess.run([sys.executable, "-m", "camfabric.cli", "prusa-connect", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "configuration error: prusa_connect.cameras[0].interval_s: must be at least 10" in result.stderr
    assert not state.exists()  # no fingerprint made, nothing started


def test_the_limits_themselves_are_accepted(tmp_path, capsys):
    path = config_file(tmp_path, f'[prusa_connect]\nstate_dir = "{tmp_path / "state"}"\n' + CAMERA
                       + f'token = "{TOKEN_A}"\ninterval_s = 10\nname = "{"n" * 64}"\n')
    assert cli.main(["prusa-connect", "--config", str(path), "--check"]) == 0
    assert "is valid (1 camera(s))" in capsys.readouterr().out


def test_a_damaged_fingerprint_file_exits_2_in_check_and_at_start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "prusa_connect_fingerprints.json").write_text('{"0": "camfabric-0123')  # cut short
    path = config_file(tmp_path, f'[prusa_connect]\nstate_dir = "{state}"\nserver = "http://127.0.0.1:9"\n'
                       + CAMERA + f'token = "{TOKEN_A}"\n')
    for extra in (["--check"], []):
        result = subprocess.run([sys.executable, "-m", "camfabric.cli", "prusa-connect", "--config",
                                 str(path), *extra], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr  # systemd's RestartPreventExitStatus=2
        assert "prusa_connect.state_dir: fingerprint file" in result.stderr
        assert "not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert (state / "prusa_connect_fingerprints.json").read_text() == '{"0": "camfabric-0123'  # untouched
