"""Where the world model says an object is *now*: a box at constant speed, one that stops, one
that reverses, a still one and one that vanishes — detections every 2 s as the rate rule allows,
times passed in (`M0 + t` monotonic, `T0 + t` wall), nothing sleeps."""

from __future__ import annotations

import math

import pytest

from camfabric.protocol.world import model_at
from camfabric.subscribers.tracker.config import WorldConfig
from camfabric.subscribers.tracker.world import PlaneSighting, WorldModel

T0 = 1_790_000_000.0
M0 = 1000.0
EVERY_S = 2.0


def _at(t: float) -> tuple[float, float]:
    return M0 + t, T0 + t


def _world(**kwargs) -> WorldModel:
    return WorldModel(WorldConfig(**{"stale_s": 5.0, "remove_s": 60.0, **kwargs}))


def _detect(world: WorldModel, t: float, x: float, y: float = 100.0) -> None:
    world.observe_plane("0", [PlaneSighting("box", (x, y), (0.0, 0.0))], *_at(t))


def _read(world: WorldModel, t: float) -> dict:
    (obj,) = world.snapshot(*_at(t))["objects"]
    return obj


def _drive(world: WorldModel, path, until: float) -> None:
    """Detections every 2 s of a box whose x at time t is `path(t)`."""
    t = 0.0
    while t <= until + 1e-9:
        _detect(world, t, path(t))
        t += EVERY_S


def test_a_box_at_constant_speed_is_where_it_is_at_the_moment_of_reading():
    world = _world()
    _drive(world, lambda t: 100.0 + 10.0 * t, 10.0)  # last detection at t = 10, x = 200
    for later in (0.0, 0.7, 1.3, 1.9):
        obj = _read(world, 10.0 + later)
        assert obj["position_mm"]["x"] == pytest.approx(200.0 + 10.0 * later, abs=0.1)
        assert obj["position_mm"]["y"] == pytest.approx(100.0, abs=0.01)
        # the detection stays as measured, with its capture time and age
        assert obj["measured_mm"]["x"] == 200.0 and obj["measured_at"] == T0 + 10.0
        assert obj["measured_age_s"] == pytest.approx(later)
    assert obj["velocity_mm_s"]["x"] == pytest.approx(10.0, abs=0.1)
    assert obj["velocity_uncertainty_mm_s"] < 2.0
    # without the velocity the reading 1.9 s after the detection would be 19 mm behind
    assert obj["uncertainty_mm"] < 5.0


def test_a_box_that_stops_is_followed_within_two_detections():
    world = _world()
    path = lambda t: 100.0 + 10.0 * min(t, 9.0)  # noqa: E731 - stops at x = 190, between detections
    _drive(world, path, 8.0)
    assert _read(world, 9.5)["position_mm"]["x"] == pytest.approx(195.0, abs=0.5)  # not told yet
    errors = []
    for n, t in enumerate((10.0, 12.0, 14.0), 1):
        _detect(world, t, path(t))
        errors.append(max(abs(_read(world, t + later)["position_mm"]["x"] - 190.0)
                          for later in (0.0, 1.0, 1.9)))
        if n == 2:
            assert abs(_read(world, t)["velocity_mm_s"]["x"]) < 1.0
    # One detection at rest only says the box fell 10 mm short: slowed or stopped. The position
    # is taken at once, the velocity half way down (carrying on at full speed would be 19 mm off).
    assert errors[0] < 10.0
    assert errors[1] < 1.5 and errors[2] < 1.0


def test_a_box_that_reverses_is_followed_within_two_detections():
    world = _world()
    path = lambda t: 100.0 + 10.0 * t if t <= 10.0 else 200.0 - 10.0 * (t - 10.0)  # noqa: E731
    _drive(world, path, 10.0)
    errors = []
    for t in (12.0, 14.0, 16.0):
        _detect(world, t, path(t))
        errors.append(max(abs(_read(world, t + later)["position_mm"]["x"] - path(t + later))
                          for later in (0.0, 1.0, 1.9)))
    assert errors[0] < 25.0  # one detection after the turn: the velocity is still turning
    assert errors[1] < 3.0 and errors[2] < 1.5
    assert _read(world, 16.0)["velocity_mm_s"]["x"] == pytest.approx(-10.0, abs=1.0)


def test_a_still_box_does_not_drift():
    """Detections of a box at rest, with the half-millimetre noise of a real camera."""
    world = _world()
    noise = [0.3, -0.2, 0.25, -0.3, 0.1, -0.15, 0.3, -0.25, 0.05, -0.1] * 3
    for n, e in enumerate(noise):
        _detect(world, n * EVERY_S, 150.0 + e, 100.0 - e)
    last = (len(noise) - 1) * EVERY_S
    for later in (0.0, 1.0, 1.9, 4.9):  # up to stale_s after the last detection
        p = _read(world, last + later)["position_mm"]
        assert math.hypot(p["x"] - 150.0, p["y"] - 100.0) < 1.0
    assert abs(_read(world, last)["velocity_mm_s"]["x"]) < 0.3


def test_a_box_that_vanishes_grows_uncertain_then_stale():
    world = _world(stale_s=30.0, max_uncertainty_mm=40.0)
    _drive(world, lambda t: 100.0 + 10.0 * t, 10.0)
    radii = [_read(world, 10.0 + later)["uncertainty_mm"] for later in (0.0, 1.0, 2.0, 4.0, 6.0)]
    assert radii == sorted(radii) and radii[0] < radii[-1]
    assert radii[0] < 2.0  # where it was just seen, within a couple of millimetres
    assert not any(_read(world, 10.0 + later)["stale"] for later in (0.0, 1.0, 2.0, 4.0))
    assert not world.expire(M0 + 12.0)
    # the uncertainty passes the configured bound long before stale_s does
    stale_at = next(t for t in (10.0 + k * 0.5 for k in range(60)) if _read(world, t)["stale"])
    assert 12.0 < stale_at < 30.0
    assert _read(world, stale_at)["uncertainty_mm"] > 40.0
    assert world.expire(M0 + stale_at)  # turning stale is a change worth publishing
    # past stale_s the estimate is no longer carried on
    held = _read(world, 41.0)["position_mm"]["x"]
    assert held == _read(world, 50.0)["position_mm"]["x"] == pytest.approx(200.0 + 10.0 * 30.0, abs=1.0)


def test_a_box_that_vanishes_is_stale_after_stale_s_at_the_latest():
    world = _world(stale_s=3.0)
    _drive(world, lambda t: 100.0 + 10.0 * t, 10.0)
    assert not _read(world, 12.9)["stale"]
    assert _read(world, 13.1)["stale"]


def test_the_published_model_evaluated_later_is_what_the_tracker_would_publish_then():
    """`protocol.world.model_at` carries a published model on: robot code and the gateway get
    the tracker's own estimate for their moment without asking it again."""
    world = _world(stale_s=8.0, max_uncertainty_mm=20.0)
    _drive(world, lambda t: 100.0 + 10.0 * t, 10.0)
    published = world.snapshot(*_at(10.4))
    for later in (0.0, 0.5, 1.6, 3.0, 6.0, 9.0):
        then = world.snapshot(*_at(10.4 + later))
        carried = model_at(published, later)
        assert carried["objects"] == then["objects"], later


def test_matching_follows_the_estimate_so_a_box_that_speeds_up_keeps_its_id():
    """Once a box moves 40 mm/s, it moves 80 mm between detections: past the match distance
    (60 mm) from where it was last seen, but not from where it is estimated to be."""
    world = _world()
    path = lambda t: 25.0 * t if t <= 6.0 else 150.0 + 40.0 * (t - 6.0)  # noqa: E731
    _drive(world, path, 16.0)
    assert len(world) == 1 and _read(world, 16.0)["observations"] == 9
