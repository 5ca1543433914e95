"""The tabletop source: the Source interface, a deterministic scene and its ground truth."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.node import create_source
from camfabric.protocol.errors import ConfigError
from camfabric.sim import tabletop
from camfabric.subscribers.tracker.detectors.aruco import MarkerFinder


def _camera(**source) -> CameraConfig:
    return CameraConfig(id=0, name="Overhead", resolution=(320, 180), fps=50,
                        source={"kind": "tabletop", **source})


def test_a_tabletop_camera_reads_frames_at_its_resolution():
    source = create_source(_camera(view="side_profile"))
    source.open()
    try:
        first = source.read(timeout=1.0)
        second = source.read(timeout=1.0)
    finally:
        source.close()
    assert first.image.shape == (180, 320, 3) and (first.w, first.h) == (320, 180)
    assert second.t_capture_ns > first.t_capture_ns
    assert not np.array_equal(first.image, second.image)  # the frame counter and time change
    assert source.device == "tabletop:side_profile:320x180@50"


def test_interrupt_wakes_a_blocked_read():
    source = tabletop.TabletopSource(64, 48, fps=0.2)
    source.open()
    source.read(timeout=1.0)
    threading.Timer(0.1, source.interrupt).start()
    started = time.monotonic()
    with pytest.raises(SourceError):
        source.read(timeout=3.0)
    assert time.monotonic() - started < 1.0


def test_bad_options_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError) as err:
        _camera(view="ceiling")
    assert err.value.path == "source.view"
    with pytest.raises(ConfigError) as err:
        _camera(distortion=[0.1, 0.2])
    assert err.value.path == "source.distortion"


def test_render_is_a_pure_function_of_scene_time():
    a, truth_a = tabletop.render("overhead", 12.5)
    b, truth_b = tabletop.render("overhead", 12.5)
    c, truth_c = tabletop.render("overhead", 14.0)
    assert np.array_equal(a, b) and truth_a == truth_b
    assert truth_c["objects"][0]["x"] != truth_a["objects"][0]["x"]


@pytest.mark.parametrize("view", ["overhead", "side_profile", "end_effector"])
def test_every_marker_lands_where_the_truth_says(view):
    apart = {20: (100.0, 90.0, 0.1), 21: (200.0, 150.0, -0.1), 22: (300.0, 210.0, 0.0)}  # none hidden
    image, truth = tabletop.render(view, 0.0, poses=apart)
    found = MarkerFinder(tabletop.ARUCO_DICTIONARY).find(image)
    objects = {o["marker_id"]: o for o in truth["objects"]}
    assert set(objects) <= set(found)
    key = "front_pixel" if view == "side_profile" else "pixel"
    for marker_id, obj in objects.items():
        assert np.linalg.norm(found[marker_id].mean(axis=0) - obj[key]) < 1.5
    for marker_id, corners in found.items():
        if marker_id in truth["references"]:
            assert np.linalg.norm(corners.mean(axis=0) - truth["references"][marker_id]) < 1.5


def test_the_overhead_camera_sees_all_four_table_references_through_a_lens():
    image, truth = tabletop.render("overhead", 0.0, distortion=(-0.3, 0.1, 0.0, 0.0))
    found = MarkerFinder().find(image)
    assert {0, 1, 2, 3} <= set(found)
