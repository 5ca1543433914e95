"""The TOML loader: the dataclass is the schema, and every error names its key path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from camfabric.protocol import ConfigError
from camfabric.runtime.config import bounded, build, load_section


@dataclass(frozen=True)
class Lens:
    fov_deg: float = bounded(78.0, 1, 360)


@dataclass(frozen=True)
class Cam:
    id: int = bounded(lo=0)
    name: str = ""
    resolution: tuple[int, int] = (640, 480)
    rotation: Literal[0, 90, 180, 270] = 0
    lens: Lens = field(default_factory=Lens)
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.name == "forbidden":
            raise ConfigError("name", "that name is reserved")


@dataclass(frozen=True)
class Section:
    cameras: list[Cam] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    enabled: bool = True


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "camfabric.toml"
    path.write_text(text)
    return path


def test_a_valid_file_builds_typed_values(tmp_path):
    path = write(tmp_path, """
        [node]
        enabled = false
        tags = { a = 1 }
        [[node.cameras]]
        id = 2
        resolution = [1920, 1080]
        rotation = 90
        key_file = "~/keys/node.key"
        lens = { fov_deg = 90 }
    """)
    section = load_section(path, "node", Section)
    cam = section.cameras[0]
    assert cam.resolution == (1920, 1080)
    assert cam.lens.fov_deg == 90.0
    assert cam.key_file == Path("~/keys/node.key").expanduser()
    assert section.tags == {"a": 1}
    assert section.enabled is False


def test_no_file_means_defaults():
    assert load_section(None, "node", Section) == Section()


@pytest.mark.parametrize("text, path, words", [
    ("[node]\nenabeld = true", "node.enabeld", "unknown key"),
    ("[node]\nenabled = 1", "node.enabled", "true or false"),
    ("[[node.cameras]]\nname = 'a'", "node.cameras[0].id", "required"),
    ("[[node.cameras]]\nid = 0\n[[node.cameras]]\nid = -1", "node.cameras[1].id", ">= 0"),
    ("[[node.cameras]]\nid = 0\nrotation = 45", "node.cameras[0].rotation", "one of 0, 90"),
    ("[[node.cameras]]\nid = 0\nresolution = [1920]", "node.cameras[0].resolution", "2 items"),
    ("[[node.cameras]]\nid = 0\nresolution = ['a', 1]", "node.cameras[0].resolution[0]", "integer"),
    ("[[node.cameras]]\nid = 0\nlens = { fov_deg = 0 }", "node.cameras[0].lens.fov_deg", ">= 1"),
    ("[[node.cameras]]\nid = 0\nname = 'forbidden'", "node.cameras[0].name", "reserved"),
    ("[node]\ntags = { a = 'x' }", "node.tags.a", "integer"),
    ("[nodes]\nenabled = true", "nodes", "unknown section"),
])
def test_each_error_names_the_key_path(tmp_path, text, path, words):
    with pytest.raises(ConfigError) as info:
        load_section(write(tmp_path, text), "node", Section)
    assert info.value.path == path
    assert words in str(info.value)


def test_unparsable_and_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_section(write(tmp_path, "[node\n"), "node", Section)
    with pytest.raises(ConfigError, match="not found"):
        load_section(tmp_path / "absent.toml", "node", Section)


def test_build_accepts_a_plain_mapping():
    assert build(Cam, {"id": 1, "name": "x"}, "cam").name == "x"


@dataclass(frozen=True)
class Service:
    token: str = ""
    api_key: str = ""
    token_env: str = "TOKEN"
    secret_key_file: Path | None = None
    name: str = ""
    retries: int = bounded(3, 0, 10)


@pytest.mark.parametrize("text, path", [
    ("token = 123456789012\n", "svc.token"),
    ("api_key = 987654321098\n", "svc.api_key"),
    ('api_key = ["AIzaSyD-not-a-real-key-0123"]\n', "svc.api_key"),
])
def test_a_secret_bearing_key_of_the_wrong_type_is_named_without_its_value(tmp_path, text, path):
    with pytest.raises(ConfigError) as caught:
        load_section(write(tmp_path, "[node]\n" + text), "node", Service)
    message = str(caught.value)
    assert caught.value.path == path.replace("svc", "node")
    assert "expected a string" in message
    for secret in ("123456789012", "987654321098", "AIzaSyD"):
        assert secret not in message


def test_other_keys_show_their_value_shortened_with_the_expected_type(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_section(write(tmp_path, f'[node]\nretries = "{"x" * 500}"\n'), "node", Service)
    message = str(caught.value)
    assert caught.value.path == "node.retries" and "expected an integer" in message
    assert "xxxx" in message and len(message) < 200
    with pytest.raises(ConfigError, match="token_env: expected a string, got int 5"):
        load_section(write(tmp_path, "[node]\ntoken_env = 5\n"), "node", Service)
