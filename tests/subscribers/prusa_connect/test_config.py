"""The [prusa_connect] section: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

from pathlib import Path

import pytest

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
