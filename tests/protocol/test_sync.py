"""Matching frame sets on the receiver's clock, with time passed in as data (no sleeping)."""

from __future__ import annotations

import gc
import itertools
import threading
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camfabric.protocol import CamfabricError, Frame, FrameSet, FrameTimeout, SyncTimeout
from camfabric.protocol.sync import DEFAULT_DEPTH, FrameSync, match

MS = 1_000_000
SECOND = 1_000_000_000
JPEG = b"\xff\xd8 not decoded in these tests \xff\xd9"
HOUR = 3600 * SECOND
WALL = 1_790_000_000 * SECOND  # some host's wall clock


class Fabric:
    """Frames as a receiver would hold them: each camera on a host with its own wall clock,
    arriving `flight_ms` after publishing, stamped with the receiver's monotonic `now`."""

    def __init__(self) -> None:
        self.now = 10_000 * SECOND  # the receiver's monotonic clock
        self.cond = threading.Condition()
        self.sync = FrameSync(self.cond, lambda: self.now)
        self.seq: dict[int, int] = {}

    def frame(self, cam: int, *, captured: int, wall_offset: int = 0, node: str = "a",
              queued_ms: float = 2, waited_ms: float = 0, seq: int | None = None) -> Frame:
        """A frame captured at `captured` on the receiver's clock, by a host whose wall clock
        reads `wall_offset` more than the receiver's; it waited `queued_ms` on its node before
        publishing, then `waited_ms` unseen (in a cache, a partition) after."""
        seq = self.seq[cam] = self.seq.get(cam, -1) + 1 if seq is None else seq
        queued = int(queued_ms * MS)
        t_capture = WALL + wall_offset + captured
        return Frame(cam=cam, seq=seq, t_capture_ns=t_capture, w=4, h=4, encoding="jpeg",
                     data=JPEG, node=node, t_publish_ns=t_capture + queued,
                     t_receive_ns=captured + queued + int(waited_ms * MS))

    def add(self, cam: int, **kwargs) -> Frame:
        frame = self.frame(cam, **kwargs)
        self.sync.add(frame)
        return frame

    def find(self, cams, **kwargs) -> FrameSet | SyncTimeout:
        with self.cond:
            return self.sync.find(cams, "jpeg", self.now, **kwargs)


def run(fabric: Fabric, cams_phase_ms: dict[int, float], frames: int, interval_ms: float = 1000 / 30,
        **kwargs) -> None:
    """`frames` captures of each camera at `interval_ms`, each camera at its own phase."""
    start = fabric.now
    for i in range(frames):
        for cam, phase in cams_phase_ms.items():
            fabric.add(cam, captured=start + int((i * interval_ms + phase) * MS), **kwargs)
    fabric.now = start + int((frames * interval_ms) * MS)


def test_the_newest_set_within_half_the_slowest_interval_is_found():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 10, 2: 5}, frames=6)
    found = fabric.find([0, 1, 2])
    assert isinstance(found, FrameSet)
    assert found.tolerance_ns == pytest.approx(SECOND / 30 / 2, abs=MS)
    assert {cam: f.seq for cam, f in found.items()} == {0: 5, 1: 5, 2: 5}
    assert found.spread_ns == pytest.approx(10 * MS, abs=2)
    assert found.captured_ns[1] - found.captured_ns[0] == pytest.approx(10 * MS, abs=2)
    assert found.age_ns(fabric.now) == max(f.age_ns(fabric.now) for f in found.values())


def test_hosts_whose_wall_clocks_differ_by_an_hour_are_matched_on_the_receivers_clock():
    fabric = Fabric()
    start = fabric.now
    for i in range(6):
        t = start + i * 33 * MS
        fabric.add(0, captured=t, node="a", wall_offset=0)
        fabric.add(1, captured=t + 3 * MS, node="b", wall_offset=HOUR, queued_ms=12)
        fabric.add(2, captured=t + 1 * MS, node="c", wall_offset=-HOUR)
    fabric.now = start + 200 * MS
    found = fabric.find([0, 1, 2])
    assert isinstance(found, FrameSet) and found.spread_ns == pytest.approx(3 * MS, abs=2)
    assert abs(found[1].t_capture_ns - found[0].t_capture_ns) > HOUR / 2  # their own stamps disagree


def test_a_node_clock_stepped_forward_changes_nothing():
    fabric = Fabric()
    run(fabric, {0: 0}, frames=8)
    run(fabric, {1: 4}, frames=8, node="b")
    fabric.now -= 8 * 33 * MS
    start = fabric.now
    for i in range(4):  # NTP steps host b's clock forward an hour
        fabric.add(0, captured=start + i * 33 * MS)
        fabric.add(1, captured=start + i * 33 * MS + 4 * MS, wall_offset=HOUR, node="b")
    fabric.now = start + 120 * MS
    found = fabric.find([0, 1])
    assert isinstance(found, FrameSet) and found.spread_ns == pytest.approx(4 * MS, abs=2)
    assert found[0].seq == found[1].seq == 11


def test_a_node_clock_stepped_back_is_placed_again_within_the_history_depth():
    fabric = Fabric()
    run(fabric, {0: 0}, frames=8)
    fabric.now -= 8 * 33 * MS + MS
    run(fabric, {1: 4}, frames=8, node="b")
    start = fabric.now
    found = None
    for i in range(DEFAULT_DEPTH + 1):  # NTP steps host b's clock back an hour
        fabric.add(0, captured=start + i * 33 * MS)
        fabric.add(1, captured=start + i * 33 * MS + 4 * MS, wall_offset=-HOUR, node="b")
        fabric.now = start + i * 33 * MS + 5 * MS
        found = fabric.find([0, 1])
    assert isinstance(found, FrameSet) and found.spread_ns == pytest.approx(4 * MS, abs=2)


def test_a_frame_that_waited_in_a_cache_is_not_taken_for_fresh():
    fabric = Fabric()
    start = fabric.now
    # A late joiner's first frames: captured a second ago, re-sent from the node's cache now.
    cached = fabric.add(0, captured=start - SECOND, waited_ms=SECOND / MS)
    fabric.add(1, captured=start - SECOND + 3 * MS, waited_ms=SECOND / MS)
    err = fabric.find([0, 1], tolerance_ns=20 * MS)
    assert isinstance(err, SyncTimeout) and err.missing == (0, 1)
    assert "waiting for the next to tell whether it is fresh" in str(err)
    fabric.add(0, captured=start + 30 * MS)
    fabric.add(1, captured=start + 33 * MS)
    fabric.now = start + 40 * MS
    found = fabric.find([0, 1], tolerance_ns=20 * MS)
    assert isinstance(found, FrameSet) and found[0].seq == found[1].seq == 1
    assert found.age_ns(fabric.now) == pytest.approx(10 * MS, abs=MS)
    # ... and the cached frame is put back where it belongs, a second earlier.
    placed = cached.t_capture_ns + fabric.sync.node_offsets()["a"]
    assert placed == pytest.approx(start - SECOND, abs=3 * MS)


def test_drops_do_not_widen_the_default_tolerance():
    fabric = Fabric()
    start = fabric.now
    for i in range(0, 16, 2):  # every other frame of camera 0 lost on the way
        fabric.add(0, captured=start + i * 33 * MS, seq=i)
    for i in range(16):
        fabric.add(1, captured=start + i * 33 * MS + 5 * MS, seq=i)
    fabric.now = start + 16 * 33 * MS
    found = fabric.find([0, 1])
    assert isinstance(found, FrameSet) and found.tolerance_ns == pytest.approx(16.5 * MS, abs=MS)


def test_the_slowest_camera_sets_the_default_tolerance():
    fabric = Fabric()
    start = fabric.now
    for i in range(30):
        fabric.add(0, captured=start + i * 33 * MS)
    for i in range(10):
        fabric.add(1, captured=start + i * 100 * MS + 20 * MS)
    fabric.now = start + 1000 * MS
    found = fabric.find([0, 1])
    assert isinstance(found, FrameSet) and found.tolerance_ns == pytest.approx(50 * MS, abs=MS)
    assert found.spread_ns <= 50 * MS and found[1].seq == 9


def test_an_announced_rate_stands_in_until_a_camera_has_two_frames():
    fabric = Fabric()
    fabric.sync.nominal_fps = lambda cam: {1: 20.0}.get(cam)
    start = fabric.now
    fabric.add(0, captured=start)
    fabric.add(0, captured=start + 33 * MS)
    fabric.add(1, captured=start + 40 * MS)  # camera 1's first frame; its heartbeat says 20 fps
    fabric.now = start + 50 * MS
    found = fabric.find([0, 1])
    assert isinstance(found, FrameSet) and found.tolerance_ns == SECOND // 20 // 2
    fabric.sync.nominal_fps = lambda cam: None
    err = fabric.find([0, 1])
    assert isinstance(err, SyncTimeout) and err.missing == (1,) and "not sent two frames" in str(err)


def test_a_camera_that_stops_is_named_too_far_apart_then_without_a_fresh_frame():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 8, 2: 3}, frames=10)
    start = fabric.now
    for i in range(10):  # camera 1 stopped; 0 and 2 go on
        fabric.add(0, captured=start + i * 33 * MS)
        fabric.add(2, captured=start + i * 33 * MS + 3 * MS)
    fabric.now = start + 330 * MS
    err = fabric.find([0, 1, 2])
    assert isinstance(err, SyncTimeout) and isinstance(err, FrameTimeout)
    assert err.apart == (1,) and err.missing == ()
    assert str(err).startswith("camera 1 too far apart from the others")
    run(fabric, {0: 0, 2: 3}, frames=60)  # two seconds later
    err = fabric.find([0, 1, 2])
    assert isinstance(err, SyncTimeout) and err.missing == (1,)
    assert "camera 1: no fresh frame" in str(err)
    assert isinstance(fabric.find([0, 2], max_age_ns=3 * SECOND), FrameSet)


def test_of_two_cameras_the_one_that_stopped_is_named():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 8}, frames=10)
    start = fabric.now
    for i in range(12):
        fabric.add(0, captured=start + i * 33 * MS)
    fabric.now = start + 400 * MS
    err = fabric.find([0, 1])
    assert isinstance(err, SyncTimeout) and err.apart == (1,)


def test_a_node_that_restarts_its_sequence_is_matched_on():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 6}, frames=6)
    first = fabric.find([0, 1])
    fabric.seq.clear()  # the node restarted: seq counts from 0 again
    run(fabric, {0: 0, 1: 6}, frames=3)
    found = fabric.find([0, 1], newer_than=first)
    assert isinstance(found, FrameSet) and found[0].seq == found[1].seq == 2
    assert found.tolerance_ns == pytest.approx(SECOND / 30 / 2, abs=MS)


def test_a_camera_never_seen_is_missing():
    fabric = Fabric()
    run(fabric, {0: 0}, frames=4)
    err = fabric.find([0, 5], tolerance_ns=10 * MS)
    assert isinstance(err, SyncTimeout) and err.missing == (5,) and "camera 5: no frame yet" in str(err)
    err = fabric.find([0, 5])  # without a tolerance, its rate is unknown as well
    assert isinstance(err, SyncTimeout) and err.missing == (5,)


def test_cameras_that_all_stopped_do_not_yield_their_last_set_as_new():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 5}, frames=5)
    assert isinstance(fabric.find([0, 1]), FrameSet)
    fabric.now += int(1.1 * SECOND)
    err = fabric.find([0, 1])
    assert isinstance(err, SyncTimeout) and err.missing == (0, 1)


def test_newer_than_waits_for_a_set_of_all_new_frames():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 5}, frames=5)
    first = fabric.find([0, 1])
    assert isinstance(first, FrameSet)
    err = fabric.find([0, 1], newer_than=first)
    assert isinstance(err, SyncTimeout) and "no new frame since the last set" in str(err)
    fabric.add(0, captured=fabric.now)  # only one camera moved on: not a new set yet
    assert isinstance(fabric.find([0, 1], newer_than=first), SyncTimeout)
    fabric.add(1, captured=fabric.now + 5 * MS)
    fabric.now += 40 * MS
    second = fabric.find([0, 1], newer_than=first)
    assert isinstance(second, FrameSet)
    assert all(second.captured_ns[c] > first.captured_ns[c] for c in (0, 1))


def test_a_minute_at_30_fps_keeps_the_history_bounded_and_frees_old_frames():
    fabric = Fabric()
    early: list[weakref.ref] = []
    start = fabric.now
    previous = None
    for i in range(60 * 30):  # one minute of injected time, three cameras
        t = start + i * SECOND // 30
        for cam, phase in ((0, 0), (1, 6), (2, 11)):
            frame = fabric.add(cam, captured=t + phase * MS)
            if i < 10:
                early.append(weakref.ref(frame))
        fabric.now = t + 12 * MS
        if i % 30 == 29:  # once a second a consumer takes a set
            found = fabric.find([0, 1, 2], tolerance_ns=12 * MS, newer_than=previous)
            assert isinstance(found, FrameSet) and found.spread_ns <= 12 * MS
            assert found[0].seq == i
            previous = found
    assert all(size <= DEFAULT_DEPTH for size in fabric.sync.history_sizes().values())
    del found, previous, frame
    gc.collect()
    assert [ref for ref in early if ref() is not None] == []


def test_a_frame_set_is_a_read_only_mapping():
    fabric = Fabric()
    run(fabric, {0: 0, 1: 5}, frames=3)
    found = fabric.find([0, 1])
    assert sorted(found) == [0, 1] and len(found) == 2 and found[0].cam == 0
    with pytest.raises(TypeError):
        found[0] = found[1]  # type: ignore[index]
    with pytest.raises(AttributeError):
        found.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        found.captured_ns[0] = 0  # type: ignore[index]
    assert "spread" in repr(found)


@pytest.mark.parametrize("kwargs", [{"cams": []}, {"cams": [0], "tolerance_ms": -1},
                                    {"cams": [0], "timeout": -1}, {"cams": [0], "max_age_ms": 0}])
def test_bad_arguments_are_our_errors(kwargs):
    fabric = Fabric()
    with pytest.raises(CamfabricError):
        fabric.sync.wait(encoding="jpeg", **kwargs)


times = st.lists(st.integers(0, 300), min_size=1, max_size=6, unique=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(times, min_size=1, max_size=4), st.integers(0, 80))
def test_the_match_is_within_tolerance_and_newest_of_all_sets(per_camera, tolerance):
    candidates = {cam: [(t * MS, None) for t in ts] for cam, ts in enumerate(per_camera)}
    tol = tolerance * MS
    found = match(candidates, tol)
    valid = [combo for combo in itertools.product(*(sorted(t for t, _ in e) for e in candidates.values()))
             if max(combo) - min(combo) <= tol]
    if not valid:
        assert found is None
        return
    assert found is not None
    got = [found[cam][0] for cam in candidates]
    assert max(got) - min(got) <= tol
    for combo in valid:  # no other set is newer for any camera
        assert all(c <= g for c, g in zip(combo, got, strict=True))
