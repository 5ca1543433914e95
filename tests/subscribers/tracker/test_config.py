"""The [tracker] section: defaults, the key paths of errors, and the tabletop calibration."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from camfabric.protocol.errors import ConfigError
from camfabric.sim.tracker import tabletop_tracker_config
from camfabric.subscribers.tracker.config import (
    DEFAULT_MODEL,
    CameraTracking,
    GeminiConfig,
    TrackerConfig,
    load_tracker_config,
)


def _load(tmp_path, text: str):
    path = tmp_path / "t.toml"
    path.write_text(textwrap.dedent(text))
    return load_tracker_config(path)


MINIMAL = """
    [tracker]
    markers = { "20" = "cup" }
    [[tracker.cameras]]
    id = 0
    references = { "0" = [0, 0], "1" = [100, 0], "2" = [100, 100], "3" = [0, 100] }
"""


def test_defaults(tmp_path):
    config = _load(tmp_path, MINIMAL)
    assert config.nodes == ["tcp://127.0.0.1:5550"] and config.publish == "tcp://127.0.0.1:5560"
    (cam,) = config.cameras
    assert (cam.role, cam.detector, cam.interval_s) == ("overhead", "aruco", 2.0)
    assert config.gemini.base_url == "https://generativelanguage.googleapis.com"
    assert config.gemini.api_key_env == "GEMINI_API_KEY"
    # today's service: a current model, the free tier's daily limit, world times derived
    assert config.gemini.model == DEFAULT_MODEL == "gemini-3.5-flash-lite"
    assert config.gemini.requests_per_day == 20
    assert config.world.stale_s is None and config.world.max_uncertainty_mm == 100.0
    assert (config.world.measurement_mm, config.world.acceleration_mm_s2) == (0.5, 0.5)


@pytest.mark.parametrize(("url", "ok"), [
    ("https://generativelanguage.googleapis.com", True),
    ("http://127.0.0.1:8080", True),
    ("http://[::1]:8080", True),
    ("http://localhost:8080", True),
    ("http://generativelanguage.googleapis.com", False),
    ("http://10.0.0.5", False),
    ("ftp://example.com", False),
    ("https://", False),
])
def test_base_url_must_be_https_unless_loopback(tmp_path, url, ok):
    text = MINIMAL + f'[tracker.gemini]\nbase_url = "{url}"\n'
    if ok:
        assert _load(tmp_path, text).gemini.base_url == url
        return
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert err.value.path == "tracker.gemini.base_url"


def test_a_gemini_camera_faster_than_2_s_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, MINIMAL + '    detector = "gemini"\n    interval_s = 1.5\n')
    assert err.value.path == "tracker.cameras[0].interval_s" and "2 s" in str(err.value)
    assert _load(tmp_path, MINIMAL + "    interval_s = 0.05\n").cameras[0].interval_s == 0.05  # aruco


@pytest.mark.parametrize("old", ["smoothing = 0.6", "smoothing_s = 0.25"])
def test_the_old_smoothing_keys_are_refused_naming_the_filter_s(tmp_path, old):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, MINIMAL + f"[tracker.world]\n{old}\n")
    assert err.value.path == "tracker.world." + old.split(" ")[0]
    assert "measurement_mm" in str(err.value) and "acceleration_mm_s2" in str(err.value)


@pytest.mark.parametrize(("extra", "path"), [
    ("interval_s = 0", "tracker.cameras[0].interval_s"),
    ('role = "ceiling"', "tracker.cameras[0].role"),
    ('detector = "yolo"', "tracker.cameras[0].detector"),
    ("camera_position_mm = [1, 2]", "tracker.cameras[0].camera_position_mm"),
    ("distortion = [0.1, 0.0, 0.0, 0.0]", "tracker.cameras[0].distortion"),
    ("colour = 1", "tracker.cameras[0].colour"),
])
def test_bad_camera_keys_name_their_path(tmp_path, extra, path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, MINIMAL + f"    {extra}\n")
    assert err.value.path == path


def test_side_references_need_three_coordinates(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, """
            [tracker]
            markers = { "20" = "cup" }
            [[tracker.cameras]]
            id = 2
            role = "side_profile"
            references = { "4" = [0, 0], "5" = [1, 0, 0] }
        """)
    assert err.value.path == "tracker.cameras[0].references.4"


def test_duplicate_camera_ids_are_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, MINIMAL + """
    [[tracker.cameras]]
    id = 0
    role = "end_effector"
""")
    assert err.value.path == "tracker.cameras[1].id"


def test_no_cameras_is_an_error_not_an_idle_process(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "[tracker]\n")
    assert err.value.path == "tracker.cameras"


def test_the_key_comes_from_the_config_or_the_environment(tmp_path):
    config = _load(tmp_path, """
        [tracker]
        [[tracker.cameras]]
        id = 1
        role = "end_effector"
        detector = "gemini"
        [tracker.gemini]
        api_key_env = "MY_KEY"
    """)
    assert config.gemini_key({"MY_KEY": "abc"}) == "abc"
    with pytest.raises(ConfigError) as err:
        config.gemini_key({"GEMINI_API_KEY": "not this one"})
    assert err.value.path == "tracker.gemini.api_key" and "MY_KEY" in str(err.value)


def test_a_key_in_the_file_never_shows_in_a_repr():
    config = TrackerConfig(cameras=(CameraTracking(id=1, role="end_effector", detector="gemini"),),
                           gemini=GeminiConfig(api_key="AIza-in-file-secret"))
    assert config.gemini_key({}) == "AIza-in-file-secret"
    assert "AIza-in-file-secret" not in repr(config)


def test_tabletop_config_is_valid_and_matches_the_scene():
    config = tabletop_tracker_config()
    assert [c.role for c in config.cameras] == ["overhead", "end_effector", "side_profile"]
    assert config.markers == {"20": "red_block", "21": "green_block", "22": "blue_block"}
    assert config.cameras[0].camera_position_mm == [200.0, 150.0, 650.0]


def test_the_documented_example_config_loads(tmp_path):
    doc = (Path(__file__).resolve().parents[3] / "docs" / "tracker.md").read_text()
    example = doc.split("## Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = _load(tmp_path, example)
    assert [c.role for c in config.cameras] == ["overhead", "side_profile", "end_effector"]
    assert config.gemini_key({"GEMINI_API_KEY": "x"}) == "x"


def test_public_surface():
    import camfabric.subscribers.tracker as tracker

    assert sorted(tracker.__all__) == ["Tracker", "TrackerConfig", "WorldModel", "load_tracker_config"]
    assert all(hasattr(tracker, name) for name in tracker.__all__)
