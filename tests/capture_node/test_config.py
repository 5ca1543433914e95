"""The [node] section: what a valid file gives, and errors that name the offending key."""

from __future__ import annotations

import textwrap

import pytest

from camfabric import cli
from camfabric.capture_node.config import CameraConfig, NodeConfig, demo_cameras, load_node_config
from camfabric.capture_node.sources import register_kind
from camfabric.protocol import ConfigError, generate_keypair
from camfabric.protocol.publisher import DEFAULT_ENDPOINT


def write(tmp_path, text: str):
    path = tmp_path / "node.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_node_config(write(tmp_path, text))
    return info.value


def test_a_full_camera_table_loads(tmp_path):
    config = load_node_config(write(tmp_path, """
        [node]
        name = "cell"
        jpeg_quality = 70
        [[node.cameras]]
        id = 0
        name = "Overhead"
        role = "overhead"
        resolution = [1920, 1080]
        fps = 15
        fov_deg = 78
        rotation = 90
        flip = "horizontal"
        [node.cameras.source]
        kind = "synthetic"
        speed = 2.5
        [[node.cameras]]
        id = 3
    """))
    assert config.name == "cell" and config.publish == DEFAULT_ENDPOINT and config.jpeg_quality == 70
    first, second = config.cameras
    assert first.resolution == (1920, 1080) and first.fps == 15 and first.fov_deg == 78
    assert first.rotation == 90 and first.flip == "horizontal" and first.output_size == (1080, 1920)
    assert first.kind == "synthetic" and first.options.speed == 2.5
    assert first.frame_id == "overhead"
    assert second.frame_id == "cam3" and second.kind == "synthetic" and second.name == "Camera 3"


def test_defaults_name_the_host():
    import socket

    config = NodeConfig()
    assert config.name == socket.gethostname()
    assert config.heartbeat_s == 1.0 and config.jpeg_quality == 80 and not config.insecure


def test_an_unknown_camera_key_is_named(tmp_path):
    err = error_of(tmp_path, """
        [[node.cameras]]
        id = 0
        colour = "red"
    """)
    assert err.path == "node.cameras[0].colour"
    assert "unknown key" in str(err)


def test_an_unknown_source_key_is_named(tmp_path):
    err = error_of(tmp_path, """
        [[node.cameras]]
        id = 0
        [[node.cameras]]
        id = 1
        [node.cameras.source]
        kind = "synthetic"
        sped = 2
    """)
    assert err.path == "node.cameras[1].source.sped"


def test_an_unknown_source_kind_is_named(tmp_path):
    err = error_of(tmp_path, """
        [[node.cameras]]
        id = 0
        [node.cameras.source]
        kind = "webcam9000"
    """)
    assert err.path == "node.cameras[0].source.kind"
    assert "synthetic" in err.message  # lists the kinds there are


def test_a_registered_kind_is_configurable_and_a_kind_is_never_rebound():
    # The tests registered the tabletop scene (tests/conftest.py), as the demo does.
    camera = CameraConfig(id=0, source={"kind": "tabletop", "view": "side_profile"})
    assert camera.kind == "tabletop"
    register_kind("tabletop", "camfabric.sim.tabletop")  # the same pair again: harmless
    with pytest.raises(ValueError, match="already"):
        register_kind("synthetic", "camfabric.sim.tabletop")


@pytest.mark.parametrize("line, path", [
    ("rotation = 45", "node.cameras[0].rotation"),
    ('flip = "diagonal"', "node.cameras[0].flip"),
    ("fps = 0", "node.cameras[0].fps"),
    ("id = -1", "node.cameras[0].id"),
    ("resolution = [0, 480]", "node.cameras[0].resolution[0]"),
    ("resolution = [640]", "node.cameras[0].resolution"),
])
def test_bad_camera_values_are_named(tmp_path, line, path):
    body = "[[node.cameras]]\n" + ("" if line.startswith("id") else "id = 0\n") + line + "\n"
    assert error_of(tmp_path, body).path == path


def test_node_level_bounds_are_named(tmp_path):
    assert error_of(tmp_path, "[node]\njpeg_quality = 101\n").path == "node.jpeg_quality"
    assert error_of(tmp_path, '[node]\nname = "a/b"\n').path == "node.name"


def test_a_duplicate_camera_id_is_named(tmp_path):
    err = error_of(tmp_path, """
        [[node.cameras]]
        id = 0
        [[node.cameras]]
        id = 1
        [[node.cameras]]
        id = 1
    """)
    assert err.path == "node.cameras[2].id"
    assert "duplicate" in err.message and "node.cameras[1].id" in err.message


def test_non_loopback_without_keys_is_refused_with_both_fixes(tmp_path):
    err = error_of(tmp_path, '[node]\npublish = "tcp://0.0.0.0:5550"\n')
    assert err.path == "node.publish"
    assert "curve" in err.message.lower() and "insecure = true" in err.message


def test_non_loopback_is_accepted_with_keys_or_insecure(tmp_path):
    keys = tmp_path / "keys"
    _, secret = generate_keypair(keys, "node")
    (tmp_path / "authorized").mkdir()
    config = load_node_config(write(tmp_path, f"""
        [node]
        publish = "tcp://192.168.1.20:5550"
        [node.curve]
        secret_key_file = "{secret}"
        authorized_keys_dir = "{tmp_path / 'authorized'}"
    """))
    assert config.curve.secret_key_file == secret
    assert load_node_config(write(tmp_path, '[node]\npublish = "tcp://*:5550"\ninsecure = true\n')).insecure


def test_missing_key_files_are_named(tmp_path):
    err = error_of(tmp_path, f"""
        [node]
        [node.curve]
        secret_key_file = "{tmp_path / 'nope.key_secret'}"
        authorized_keys_dir = "{tmp_path}"
    """)
    assert err.path == "node.curve.secret_key_file"


def test_demo_cameras_are_the_seed_registry():
    cams = demo_cameras()
    assert [(c.id, c.name, c.role, c.mount, c.device) for c in cams] == [
        (0, "Overhead", "overhead", "fixed", "/dev/video0"),
        (1, "Arm-mounted", "end_effector", "arm", "/dev/video4"),
        (2, "Side", "side_profile", "fixed", "/dev/video6"),
    ]
    assert all(c.resolution == (640, 360) and c.fps == 15 and c.fov_deg == 78 for c in cams)
    assert all(c.kind == "synthetic" for c in cams)
    assert cams[0].description.startswith("Logitech BRIO mounted above workspace")
    assert demo_cameras(1920, 1080, 30)[2].resolution == (1920, 1080)


def test_camera_config_in_python_checks_its_source():
    with pytest.raises(ConfigError) as info:
        CameraConfig(id=0, source={"kind": "synthetic", "speed": -1})
    assert info.value.path == "source.speed"


def test_the_command_exits_2_naming_the_key(tmp_path, capsys):
    path = write(tmp_path, "[[node.cameras]]\nid = 0\nrotation = 45\n")
    assert cli.main(["node", "--config", str(path)]) == 2
    assert "node.cameras[0].rotation" in capsys.readouterr().err


def test_the_command_refuses_a_config_without_cameras(tmp_path, capsys):
    path = write(tmp_path, '[node]\nname = "empty"\n')
    assert cli.main(["node", "--config", str(path)]) == 2
    assert "node.cameras" in capsys.readouterr().err
