"""The world model: matching, motion, heights, staleness and removal, with times passed in.

Each sighting carries its frame's capture time twice: `M0 + t` on the monotonic clock (ages,
the filter, expiry) and `T0 + t` on the wall clock (the published stamps)."""

from __future__ import annotations

from camfabric.subscribers.tracker.config import WorldConfig
from camfabric.subscribers.tracker.world import HeightSighting, PlaneSighting, WorldModel

T0 = 1_790_000_000.0
M0 = 1000.0


def _at(t: float) -> tuple[float, float]:
    """(monotonic, wall) of a frame captured t s into the test."""
    return M0 + t, T0 + t


def _world(**kwargs) -> WorldModel:
    return WorldModel(WorldConfig(**{"match_distance_mm": 50.0, "measurement_mm": 0.0, "stale_s": 5.0,
                                     "remove_s": 20.0, **kwargs}))


def _seen(label, x, y, pixel=(10.0, 20.0)):
    return PlaneSighting(label, (x, y), pixel)


def test_a_new_detection_becomes_an_object_with_every_published_field():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(0))
    model = world.snapshot(*_at(1))
    assert model["frame"] == "workspace" and model["updated"] == T0 + 1
    (obj,) = model["objects"]
    assert obj["label"] == "cup" and obj["position_mm"] == {"x": 100.0, "y": 50.0, "z": 0.0}
    assert set(obj) == {"id", "label", "position_mm", "confidence", "camera", "first_seen", "last_seen",
                        "observations", "stale", "pixel", "height_seen", "height_at", "velocity_mm_s",
                        "velocity_uncertainty_mm_s", "uncertainty_mm", "measured_mm", "measured_at",
                        "measured_age_s", "filter"}
    assert obj["measured_mm"] == obj["position_mm"] and obj["measured_at"] == T0
    assert obj["measured_age_s"] == 1.0 and obj["velocity_mm_s"] == {"x": 0.0, "y": 0.0}
    assert obj["uncertainty_mm"] > 0 and model["max_uncertainty_mm"] == 100.0
    assert obj["height_seen"] is None and obj["height_at"] is None
    assert obj["camera"] == "0" and obj["pixel"] == {"0": [10.0, 20.0]}
    assert obj["first_seen"] == obj["last_seen"] == T0 and obj["observations"] == 1 and not obj["stale"]


def test_nearby_detections_of_a_label_update_one_object_smoothly():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(0))
    world.observe_plane("0", [_seen("cup", 110.0, 50.0)], *_at(2))
    world.observe_plane("0", [_seen("cup", 110.0, 50.0)], *_at(4))
    (obj,) = world.snapshot(*_at(4))["objects"]
    assert obj["position_mm"]["x"] == 110.0  # no measurement noise: the newest sighting
    assert obj["observations"] == 3 and obj["last_seen"] == T0 + 4 and obj["first_seen"] == T0


def test_a_frame_older_than_the_last_sighting_never_moves_an_object_back():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(4))
    world.observe_plane("0", [_seen("cup", 80.0, 50.0)], *_at(2))  # a slow detection finishing late
    (obj,) = world.snapshot(*_at(5))["objects"]
    assert obj["position_mm"]["x"] == 100.0 and obj["last_seen"] == T0 + 4


def test_far_detections_or_other_labels_are_other_objects():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0), _seen("cup", 300.0, 50.0),
                              _seen("box", 100.0, 52.0)], *_at(0))
    world.observe_plane("0", [_seen("cup", 102.0, 50.0), _seen("cup", 298.0, 50.0),
                              _seen("box", 100.0, 52.0)], *_at(1))
    objects = world.snapshot(*_at(1))["objects"]
    assert sorted(o["label"] for o in objects) == ["box", "cup", "cup"]
    assert all(o["observations"] == 2 for o in objects)


def test_heights_from_the_side_go_to_the_object_that_explains_the_pixel():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0), _seen("cup", 300.0, 50.0)], *_at(0))

    def height_at(x, y):  # a side camera whose pixel lines up with x = 300
        return 42.0, abs(x - 300.0)

    world.observe_heights("2", [HeightSighting("cup", (500.0, 100.0), height_at)], *_at(1))
    objects = {o["position_mm"]["x"]: o for o in world.snapshot(*_at(1))["objects"]}
    assert objects[300.0]["position_mm"]["z"] == 42.0  # the first height is taken as is
    assert objects[300.0]["pixel"] == {"0": [10.0, 20.0], "2": [500.0, 100.0]}
    assert objects[100.0]["position_mm"]["z"] == 0.0
    world.observe_heights("2", [HeightSighting("cup", (500.0, 100.0), lambda x, y: (50.0, abs(x - 300)))],
                          *_at(2))
    objects = {o["position_mm"]["x"]: o for o in world.snapshot(*_at(2))["objects"]}
    assert objects[300.0]["position_mm"]["z"] == 50.0  # the newest height
    # a side sighting changes only z and its own fields: not the (x, y)'s time, camera or count
    obj = objects[300.0]
    assert obj["last_seen"] == T0 and obj["camera"] == "0" and obj["observations"] == 1
    assert obj["height_seen"] == T0 + 2


def test_a_height_is_measured_where_the_box_was_when_the_side_frame_was_captured():
    """A box moving 10 mm/s along x, seen from above at t = 0 and t = 2 s; the side frame was
    captured at t = 1 s, when the box was at x = 10: its height is taken there, not at x = 20
    where the box was last seen, nor at x = 0."""
    world = _world(match_distance_mm=500.0)
    world.observe_plane("0", [_seen("cup", 0.0, 50.0)], *_at(0))
    world.observe_plane("0", [_seen("cup", 20.0, 50.0)], *_at(2))

    def height_at(x, y):  # a side camera whose pixel lines up with x = 10 and height 40
        return 40.0 + (x - 10.0), abs(x - 10.0)

    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), height_at)], *_at(1))
    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), lambda x, y: (40.0 + (x - 30.0),
                                                                             abs(x - 30.0)))], *_at(3))
    (obj,) = world.snapshot(*_at(3))["objects"]
    assert obj["position_mm"]["z"] == 40.0  # at t = 3 it was (carried on) at x = 30
    assert world.unmatched_heights == 0


def test_a_height_is_measured_at_the_overhead_sighting_captured_with_the_side_frame():
    """The side frame (t = 1.04 s) came with an overhead frame (t = 1.0 s, x = 25): the height is
    measured at that sighting — not at x = 26, where carrying the track on to 1.04 s puts it —
    and the object says so (`height_at`); without that sighting, at the interpolated place.
    The pair's overhead look was an extra one (track only): it moves neither x, y nor their time."""
    world = _world(match_distance_mm=500.0)
    world.observe_plane("0", [_seen("cup", 0.0, 50.0)], *_at(0))
    world.observe_plane("0", [_seen("cup", 25.0, 50.0), _seen("mug", 0.0, 0.0)], *_at(1.0), track_only=True)

    def height_at(x, y):  # a side camera whose pixel lines up with x = 25 and height 40
        return 40.0 + (x - 25.0), abs(x - 25.0)

    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), height_at)], *_at(1.04), paired=_at(1.0))
    (obj,) = world.snapshot(*_at(1.04))["objects"]
    assert obj["position_mm"]["z"] == 40.0
    assert obj["height_at"] == {"x": 25.0, "y": 50.0, "seen": T0 + 1.0, "synced": True}
    assert obj["height_seen"] == T0 + 1.04
    assert obj["last_seen"] == T0 and obj["position_mm"]["x"] == 0.0 and obj["observations"] == 1
    # the overhead frame of the next pair missed the box: the place is interpolated, and counted
    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), height_at)], *_at(1.54), paired=_at(1.5))
    (obj,) = world.snapshot(*_at(1.54))["objects"]
    assert obj["height_at"] == {"x": 38.5, "y": 50.0, "seen": T0 + 1.54, "synced": False}
    assert world.heights == {"synced": 1, "interpolated": 1}


def test_a_first_height_puts_its_place_at_that_height_parallax_and_all():
    """An overhead camera at x = 0, 200 mm up: a marker on a 50 mm box at x = 75 is seen where
    its ray meets the table, x = 100. The first height (z unknown until then) is measured at
    x = 75, not at the uncorrected 100."""
    def towards_camera(xy, z):
        return xy[0] * (1 - z / 200), xy[1]

    world = WorldModel(WorldConfig(match_distance_mm=500, measurement_mm=0.0))
    world.observe_plane("0", [PlaneSighting("cup", (100.0, 0.0), (0, 0), 1.0, towards_camera)], *_at(0))
    world.observe_heights("2", [HeightSighting("cup", (0.0, 0.0), lambda x, y: (50.0, abs(x - 75)))],
                          *_at(0), paired=_at(0))
    (obj,) = world.snapshot(*_at(0))["objects"]
    assert obj["height_at"]["x"] == 75.0 and obj["position_mm"] == {"x": 75.0, "y": 0.0, "z": 50.0}


def test_a_side_detection_without_an_overhead_fix_is_counted_not_invented():
    world = _world()
    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), lambda x, y: (10.0, 0.0))], *_at(0))
    assert world.snapshot(*_at(0))["objects"] == []
    assert world.unmatched_heights == 1


def test_parallax_correction_uses_the_known_height():
    def halve_towards_origin(xy, z):
        return (xy[0] / 2, xy[1] / 2) if z else xy

    world = WorldModel(WorldConfig(match_distance_mm=500, measurement_mm=0.0))
    sighting = PlaneSighting("cup", (100.0, 50.0), (0, 0), 1.0, halve_towards_origin)
    world.observe_plane("0", [sighting], *_at(0))
    world.observe_heights("2", [HeightSighting("cup", (0.0, 0.0), lambda x, y: (40.0, 0.0))], *_at(0))
    world.observe_plane("0", [sighting], *_at(1))
    (obj,) = world.snapshot(*_at(1))["objects"]
    assert obj["position_mm"] == {"x": 50.0, "y": 25.0, "z": 40.0}


def test_staleness_runs_on_the_monotonic_clock_not_the_wall():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(0))
    # the wall clock stepped an hour either way: the object's age is still 1 s
    for wall in (T0 + 3601, T0 - 3599):
        assert not world.expire(M0 + 1)
        (obj,) = world.snapshot(M0 + 1, wall)["objects"]
        assert obj["stale"] is False and obj["last_seen"] == T0


def test_objects_turn_stale_then_disappear():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(0))
    assert not world.expire(M0 + 4.9)
    assert world.expire(M0 + 5.1)  # turning stale is a change worth publishing
    assert world.snapshot(*_at(5.1))["objects"][0]["stale"] is True
    assert not world.expire(M0 + 10)
    assert world.expire(M0 + 20.1)
    assert world.snapshot(*_at(20.1))["objects"] == []


def test_a_stale_object_seen_again_is_fresh_and_keeps_its_id():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], *_at(0))
    first = world.snapshot(*_at(0))["objects"][0]["id"]
    world.expire(M0 + 8)
    world.observe_plane("0", [_seen("cup", 101.0, 50.0)], *_at(8))
    (obj,) = world.snapshot(*_at(8))["objects"]
    assert obj["id"] == first and obj["stale"] is False


def test_end_effector_detections_stay_in_their_own_frame():
    world = _world()
    world.observe_camera_frame("1", "end_effector", [{"label": "cup", "pixel": [320.0, 180.0],
                                                      "frame": "end_effector"}], *_at(0))
    model = world.snapshot(*_at(0))
    assert model["objects"] == []
    assert model["camera_frames"]["1"]["frame"] == "end_effector"
    assert model["camera_frames"]["1"]["detections"][0]["pixel"] == [320.0, 180.0]
