"""The per-camera rate limit, driven by a hand-moved clock (no sleeping)."""

from __future__ import annotations

from camfabric.subscribers.tracker.intake import FrameIntake, RateLimiter


def _run(intake: FrameIntake, cams, seconds: float, fps: float, start: float = 1000.0,
         detect_s: float = 0.0) -> dict[int, list[float]]:
    """Offer `fps` frames a second per camera; a detection takes `detect_s` of clock time."""
    accepted: dict[int, list[float]] = {cam: [] for cam in cams}
    in_flight: dict[int, float] = {}
    for k in range(round(seconds * fps)):
        now = start + k / fps
        for cam in cams:
            if cam in in_flight and now >= in_flight[cam]:
                intake.done(cam)
                del in_flight[cam]
            if intake.offer(cam, now):
                accepted[cam].append(now)
                if detect_s:
                    in_flight[cam] = now + detect_s
                else:
                    intake.done(cam)
    return accepted


def test_a_minute_at_30_fps_yields_exactly_30_detections_per_camera():
    intake = FrameIntake({0: 2.0, 1: 2.0, 2: 2.0})
    accepted = _run(intake, [0, 1, 2], seconds=60, fps=30)
    for cam in (0, 1, 2):
        assert len(accepted[cam]) == 30
        gaps = [b - a for a, b in zip(accepted[cam], accepted[cam][1:], strict=False)]
        assert min(gaps) >= 2.0 - 1e-9
        assert intake.counts[cam].offered == 1800
        assert intake.counts[cam].accepted == 30


def test_each_camera_has_its_own_interval():
    intake = FrameIntake({0: 2.0, 1: 5.0, 2: 0.5})
    accepted = _run(intake, [0, 1, 2], seconds=60, fps=30)
    assert [len(accepted[c]) for c in (0, 1, 2)] == [30, 12, 120]


def test_a_slow_detection_holds_its_camera_back_and_only_that_camera():
    intake = FrameIntake({0: 2.0, 1: 2.0})
    accepted = _run(intake, [0, 1], seconds=60, fps=30, detect_s=3.0)
    # camera 0's detections take 3 s: the next frame goes once the last one is done
    assert 15 <= len(accepted[0]) <= 20
    gaps = [b - a for a, b in zip(accepted[0], accepted[0][1:], strict=False)]
    assert min(gaps) >= 3.0 - 1e-9
    assert intake.counts[0].busy > 0


def test_frames_of_a_camera_not_configured_are_refused():
    intake = FrameIntake({0: 2.0})
    assert not intake.offer(7, 1000.0)


def test_the_limit_holds_while_the_previous_frame_is_in_flight():
    intake = FrameIntake({0: 2.0})
    assert intake.offer(0, 100.0)
    assert not intake.offer(0, 105.0)  # interval passed, but the detection has not finished
    intake.done(0)
    assert intake.offer(0, 105.0)
    assert intake.next_allowed(0) == 107.0


def test_a_clock_stepping_backwards_does_not_block_a_camera():
    limiter = RateLimiter({0: 2.0})
    assert limiter.try_acquire(0, 5000.0)
    assert limiter.try_acquire(0, 1000.0)  # wall clock set back by NTP
    assert not limiter.try_acquire(0, 1001.0)
    assert limiter.try_acquire(0, 1002.0)
