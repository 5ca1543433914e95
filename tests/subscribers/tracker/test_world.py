"""The world model: matching, smoothing, heights, staleness and removal, with times passed in."""

from __future__ import annotations

import pytest

from camfabric.subscribers.tracker.config import WorldConfig
from camfabric.subscribers.tracker.world import HeightSighting, PlaneSighting, WorldModel

T0 = 1_790_000_000.0


def _world(**kwargs) -> WorldModel:
    return WorldModel(WorldConfig(**{"match_distance_mm": 50.0, "smoothing": 0.5, "stale_s": 5.0,
                                     "remove_s": 20.0, **kwargs}))


def _seen(label, x, y, pixel=(10.0, 20.0)):
    return PlaneSighting(label, (x, y), pixel)


def test_a_new_detection_becomes_an_object_with_every_published_field():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], T0)
    model = world.snapshot(T0 + 1)
    assert model["frame"] == "workspace" and model["updated"] == T0 + 1
    (obj,) = model["objects"]
    assert obj["label"] == "cup" and obj["position_mm"] == {"x": 100.0, "y": 50.0, "z": 0.0}
    assert set(obj) == {"id", "label", "position_mm", "confidence", "camera", "first_seen", "last_seen",
                        "observations", "stale", "pixel"}
    assert obj["camera"] == "0" and obj["pixel"] == {"0": [10.0, 20.0]}
    assert obj["first_seen"] == obj["last_seen"] == T0 and obj["observations"] == 1 and not obj["stale"]


def test_nearby_detections_of_a_label_update_one_object_smoothly():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], T0)
    world.observe_plane("0", [_seen("cup", 110.0, 50.0)], T0 + 2)
    world.observe_plane("0", [_seen("cup", 110.0, 50.0)], T0 + 4)
    (obj,) = world.snapshot(T0 + 4)["objects"]
    assert obj["position_mm"]["x"] == pytest.approx(107.5)  # 100 -> 105 -> 107.5
    assert obj["observations"] == 3 and obj["last_seen"] == T0 + 4 and obj["first_seen"] == T0


def test_far_detections_or_other_labels_are_other_objects():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0), _seen("cup", 300.0, 50.0),
                              _seen("box", 100.0, 52.0)], T0)
    world.observe_plane("0", [_seen("cup", 102.0, 50.0), _seen("cup", 298.0, 50.0),
                              _seen("box", 100.0, 52.0)], T0 + 1)
    objects = world.snapshot(T0 + 1)["objects"]
    assert sorted(o["label"] for o in objects) == ["box", "cup", "cup"]
    assert all(o["observations"] == 2 for o in objects)


def test_heights_from_the_side_go_to_the_object_that_explains_the_pixel():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0), _seen("cup", 300.0, 50.0)], T0)

    def height_at(x, y):  # a side camera whose pixel lines up with x = 300
        return 42.0, abs(x - 300.0)

    world.observe_heights("2", [HeightSighting("cup", (500.0, 100.0), height_at)], T0 + 1)
    objects = {o["position_mm"]["x"]: o for o in world.snapshot(T0 + 1)["objects"]}
    assert objects[300.0]["position_mm"]["z"] == 42.0  # the first height is taken as is
    assert objects[300.0]["pixel"] == {"0": [10.0, 20.0], "2": [500.0, 100.0]}
    assert objects[100.0]["position_mm"]["z"] == 0.0
    world.observe_heights("2", [HeightSighting("cup", (500.0, 100.0), lambda x, y: (50.0, abs(x - 300)))],
                          T0 + 2)
    objects = {o["position_mm"]["x"]: o for o in world.snapshot(T0 + 2)["objects"]}
    assert objects[300.0]["position_mm"]["z"] == 46.0  # then smoothed


def test_a_side_detection_without_an_overhead_fix_is_counted_not_invented():
    world = _world()
    world.observe_heights("2", [HeightSighting("cup", (1.0, 2.0), lambda x, y: (10.0, 0.0))], T0)
    assert world.snapshot(T0)["objects"] == []
    assert world.unmatched_heights == 1


def test_parallax_correction_uses_the_known_height():
    def halve_towards_origin(xy, z):
        return (xy[0] / 2, xy[1] / 2) if z else xy

    world = WorldModel(WorldConfig(match_distance_mm=500, smoothing=1.0))
    world.observe_plane("0", [PlaneSighting("cup", (100.0, 50.0), (0, 0), 1.0, halve_towards_origin)], T0)
    world.observe_heights("2", [HeightSighting("cup", (0.0, 0.0), lambda x, y: (40.0, 0.0))], T0)
    world.observe_plane("0", [PlaneSighting("cup", (100.0, 50.0), (0, 0), 1.0, halve_towards_origin)], T0 + 1)
    (obj,) = world.snapshot(T0 + 1)["objects"]
    assert obj["position_mm"] == {"x": 50.0, "y": 25.0, "z": 40.0}


def test_objects_turn_stale_then_disappear():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], T0)
    assert not world.expire(T0 + 4.9)
    assert world.expire(T0 + 5.1)  # turning stale is a change worth publishing
    assert world.snapshot(T0 + 5.1)["objects"][0]["stale"] is True
    assert not world.expire(T0 + 10)
    assert world.expire(T0 + 20.1)
    assert world.snapshot(T0 + 20.1)["objects"] == []


def test_a_stale_object_seen_again_is_fresh_and_keeps_its_id():
    world = _world()
    world.observe_plane("0", [_seen("cup", 100.0, 50.0)], T0)
    first = world.snapshot(T0)["objects"][0]["id"]
    world.expire(T0 + 8)
    world.observe_plane("0", [_seen("cup", 101.0, 50.0)], T0 + 8)
    (obj,) = world.snapshot(T0 + 8)["objects"]
    assert obj["id"] == first and obj["stale"] is False


def test_end_effector_detections_stay_in_their_own_frame():
    world = _world()
    world.observe_camera_frame("1", "end_effector", [{"label": "cup", "pixel": [320.0, 180.0],
                                                      "frame": "end_effector"}], T0)
    model = world.snapshot(T0)
    assert model["objects"] == []
    assert model["camera_frames"]["1"]["frame"] == "end_effector"
    assert model["camera_frames"]["1"]["detections"][0]["pixel"] == [320.0, 180.0]
