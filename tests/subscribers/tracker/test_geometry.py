"""Pixels to millimetres on rendered tabletop frames with markers at known positions."""

from __future__ import annotations

import numpy as np
import pytest

from camfabric.sim import tabletop
from camfabric.subscribers.tracker.detectors.aruco import MarkerFinder
from camfabric.subscribers.tracker.geometry import (
    SideProjection,
    TablePlane,
    Undistorter,
    dlt,
    marker_centre,
)

from .conftest import camera_image

TILES = tuple(tabletop.TaggedBox(20 + i, f"tile{i}", 0.5, (60, 60, 60), 0.0, 1.0, 0.0) for i in range(3))
POSES = [
    {20: (80.0, 80.0, 0.3), 21: (200.0, 150.0, 0.0), 22: (320.0, 220.0, -0.5)},
    {20: (320.0, 80.0, 0.1), 21: (100.0, 230.0, 0.7), 22: (250.0, 120.0, 0.0)},
    {20: (150.0, 200.0, 1.2), 21: (290.0, 160.0, -1.0), 22: (60.0, 150.0, 0.4)},
]
LENS = (-0.6, 0.25, 0.002, -0.001)
FINDER = MarkerFinder("DICT_4X4_50")
TABLE_REFS = {i: p[:2] for i, p in tabletop.TABLE_REFERENCES.items()}


def _table_errors(distortion, undistort: bool) -> list[float]:
    view = tabletop.make_view("overhead", 640, 360, distortion=distortion)
    errors = []
    for poses in POSES:
        image, _, truth = camera_image(view, boxes=TILES, poses=poses)
        markers = FINDER.find(image)
        lens = Undistorter(view.camera_matrix, distortion) if undistort else None
        plane = TablePlane(TABLE_REFS, lens)
        assert plane.fit({i: marker_centre(c) for i, c in markers.items()})
        for obj in truth["objects"]:
            x, y = plane.to_table(marker_centre(markers[obj["marker_id"]]))[0]
            errors.append(float(np.hypot(x - obj["x"], y - obj["y"])))
    return errors


def test_overhead_positions_within_5_mm():
    errors = _table_errors((), undistort=False)
    assert len(errors) == 9
    assert max(errors) < 5.0, errors


def test_overhead_positions_within_5_mm_through_a_distorting_lens():
    errors = _table_errors(LENS, undistort=True)
    assert max(errors) < 5.0, errors


def test_undistortion_is_what_keeps_a_distorting_lens_accurate():
    corrected = _table_errors(LENS, undistort=True)
    raw = _table_errors(LENS, undistort=False)
    assert max(raw) > 2 * max(corrected)


def test_parallax_of_tall_boxes_is_corrected_with_the_camera_position():
    view = tabletop.make_view("overhead", 640, 360)
    image, _, truth = camera_image(view, poses={20: (90.0, 90.0, 0.0), 21: (200.0, 150.0, 0.0),
                                                22: (310.0, 210.0, 0.0)})
    markers = FINDER.find(image)
    plane = TablePlane(TABLE_REFS, camera_position=view.position)
    plane.fit({i: marker_centre(c) for i, c in markers.items()})
    for obj in truth["objects"]:
        table_xy = plane.to_table(marker_centre(markers[obj["marker_id"]]))[0]
        x, y = plane.correct_parallax(table_xy, obj["z"])
        assert np.hypot(x - obj["x"], y - obj["y"]) < 5.0
    tallest = truth["objects"][2]  # 80 mm, far from the centre: uncorrected it is well off
    raw = plane.to_table(marker_centre(markers[tallest["marker_id"]]))[0]
    assert np.hypot(raw[0] - tallest["x"], raw[1] - tallest["y"]) > 10.0


@pytest.mark.parametrize("poses", POSES[:2])
def test_side_camera_heights_within_10_mm(poses):
    view = tabletop.make_view("side_profile", 640, 360)
    image, _, truth = camera_image(view, poses=poses)
    markers = FINDER.find(image)
    side = SideProjection({**tabletop.TABLE_REFERENCES, **tabletop.SIDE_REFERENCES})
    assert side.fit({i: marker_centre(c) for i, c in markers.items()})
    offset = tabletop.FRONT_TAG_TOP_MM + tabletop.FRONT_TAG_MM / 2
    measured = 0
    for obj in truth["objects"]:
        if obj["marker_id"] not in markers:
            continue  # hidden behind a nearer box
        z, residual = side.height_at(marker_centre(markers[obj["marker_id"]]), obj["x"], obj["y"])
        assert abs(z + offset - obj["z"]) < 10.0, (obj, z + offset)
        assert residual < 15.0  # the marker sits on the front face, not over the centre
        measured += 1
    assert measured >= 2


def test_dlt_recovers_a_projection_exactly():
    view = tabletop.make_view("side_profile", 640, 360)
    world = np.array([p for p in {**tabletop.TABLE_REFERENCES, **tabletop.SIDE_REFERENCES}.values()])
    pixels, _ = view.project(world)
    p = dlt(world, pixels)
    homog = np.hstack([world, np.ones((len(world), 1))]) @ p.T
    assert np.allclose(homog[:, :2] / homog[:, 2:], pixels, atol=1e-6)


def test_side_projection_refuses_references_all_in_one_plane():
    flat = {i: (x, 320.0, z) for i, (x, z) in enumerate([(0, 0), (100, 0), (200, 50), (0, 100), (100, 150),
                                                          (200, 100)])}
    side = SideProjection(flat)
    assert not side.fit({i: (10.0 * i, 5.0 * i) for i in flat})
    assert not side.calibrated


def test_marker_centre_is_the_diagonals_crossing_not_the_corner_mean():
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [8.0, 6.0], [2.0, 6.0]])  # a trapezoid
    centre = marker_centre(corners)
    assert centre[1] == pytest.approx(3.75)  # where the diagonals cross; the corner mean is 3.0
