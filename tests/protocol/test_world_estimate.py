"""`protocol.world`: a published world model carried on to a later moment, and what it does with
a model it cannot carry on (an older tracker's, or a broken one): leaves it as it came."""

from __future__ import annotations

import math

import pytest

from camfabric import protocol
from camfabric.protocol.world import model_at, model_moment_ns

MOVING = {"id": "box-1", "label": "box", "position_mm": {"x": 100.0, "y": 50.0, "z": 30.0},
          "velocity_mm_s": {"x": 10.0, "y": -2.0}, "measured_age_s": 0.5, "stale": False,
          "filter": {"position_var_mm2": 0.2, "covariance_mm2_s": 0.1, "velocity_var_mm2_s2": 0.3,
                     "acceleration_mm_s2": 0.5}}
MODEL = {"objects": [MOVING], "updated": 1_790_000_000.0, "stale_s": 4.0, "max_uncertainty_mm": 100.0}


def test_an_object_is_carried_along_its_velocity_and_grows_uncertain():
    radii = []
    for later in (0.0, 1.0, 2.0, 3.0):
        (obj,) = model_at(MODEL, later)["objects"]
        expected = {"x": 100.0 + 10 * later, "y": 50.0 - 2 * later, "z": 30.0}
        assert obj["position_mm"] == pytest.approx(expected)
        assert obj["measured_age_s"] == pytest.approx(0.5 + later)
        radii.append(obj["uncertainty_mm"])
    assert radii == sorted(radii) and radii[0] < radii[-1]
    (obj,) = model_at(MODEL, 3.6)["objects"]  # 4.1 s after the detection: past stale_s
    assert obj["stale"] is True
    assert obj["position_mm"]["x"] == pytest.approx(100.0 + 10 * 3.5)  # carried on for stale_s, then held
    assert MODEL["objects"][0]["position_mm"]["x"] == 100.0  # the received model is left alone


def test_the_model_s_moment_on_the_reader_s_clock_needs_only_differences():
    """Received at 5000 s of the reader's monotonic clock, published 0.25 s after `updated` on
    the tracker's wall clock: the model's moment is 4999.75 s on the reader's clock, whatever
    the tracker's wall clock says against the reader's."""
    for wall_offset in (0.0, 3600.0, -86400.0):
        model = {**MODEL, "updated": MODEL["updated"] + wall_offset}
        t_publish = int((model["updated"] + 0.25) * 1e9)
        assert model_moment_ns(model, t_publish, 5_000 * 10**9) == pytest.approx(4_999.75e9, abs=1e3)


def test_an_object_at_a_moment_through_the_public_names():
    msg = protocol.World(model=MODEL, t_publish_ns=int(MODEL["updated"] * 1e9), t_receive_ns=10**12)
    (obj,) = msg.objects()
    assert isinstance(obj, protocol.WorldObject) and obj.id == "box-1" and obj.label == "box"
    where = obj.at(10**12 + 2 * 10**9)
    assert isinstance(where, protocol.Estimate)
    assert (where.x, where.y, where.z) == pytest.approx((120.0, 46.0, 30.0))
    assert where.age_s == pytest.approx(2.5) and not where.stale and where.uncertainty_mm > 0
    assert obj.at(10**12 - 10**9).x == pytest.approx(100.0)  # before the model's moment: as published
    assert msg.at(10**12 + 2 * 10**9)["objects"][0]["position_mm"]["x"] == pytest.approx(120.0)


@pytest.mark.parametrize("broken", [
    {"id": "old", "position_mm": {"x": 1.0, "y": 2.0, "z": 3.0}, "stale": True},  # an older tracker's
    {**MOVING, "velocity_mm_s": "fast"},
    {**MOVING, "velocity_mm_s": {"x": math.nan, "y": 0.0}},
    {**MOVING, "position_mm": [1, 2, 3]},
    {**MOVING, "filter": {"acceleration_mm_s2": "x"}},
    {**MOVING, "filter": [1, 2]},
    {**MOVING, "measured_age_s": 1e308},
    {**MOVING, "position_mm": {"x": math.inf, "y": 0.0, "z": 0.0}},
    {**MOVING, "filter": {**MOVING["filter"], "velocity_var_mm2_s2": 1e308}},
])
def test_an_object_that_cannot_be_carried_on_is_left_as_published(broken):
    model = {**MODEL, "objects": [broken, MOVING, "not an object"]}
    objects = model_at(model, 1.0)["objects"]
    assert objects[0] == broken and objects[2] == "not an object"
    assert objects[1]["position_mm"]["x"] == pytest.approx(110.0)  # its neighbours are carried on


@pytest.mark.parametrize("model", [{}, {"objects": "none"}, {"objects": [], "updated": "soon"},
                                   {"objects": [MOVING], "stale_s": True, "updated": math.inf}])
def test_a_model_of_odd_shape_never_raises(model):
    msg = protocol.World(model=model, t_publish_ns=1, t_receive_ns=2)
    assert isinstance(msg.at(3), dict)
    assert all(isinstance(o, protocol.WorldObject) for o in msg.objects())
