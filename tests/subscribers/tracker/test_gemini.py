"""The Gemini detector against a fake Gemini server on loopback (real HTTP)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import math

import numpy as np
import pytest

from camfabric.protocol.jpeg import encode_jpeg
from camfabric.sim import tabletop
from camfabric.subscribers.tracker.budget import PACIFIC, RequestBudget
from camfabric.subscribers.tracker.config import CameraTracking, GeminiConfig, WorldConfig
from camfabric.subscribers.tracker.detectors import DetectionSkipped
from camfabric.subscribers.tracker.detectors.aruco import MarkerFinder
from camfabric.subscribers.tracker.detectors.gemini import GeminiDetector
from camfabric.subscribers.tracker.intake import FrameIntake
from camfabric.subscribers.tracker.pipeline import CameraPipeline
from camfabric.subscribers.tracker.world import WorldModel
from tests.fakes.gemini import FakeGemini

from .conftest import camera_image

KEY = "AIzaSy-test-secret-key-0123456789"
JPEG = encode_jpeg(np.full((360, 640, 3), 128, np.uint8))


@pytest.fixture
def fake():
    with FakeGemini(api_key=KEY, objects=[{"label": "red_block", "box_2d": [250, 100, 500, 300]}]) as server:
        yield server


def _detectors(fake, clock, n=1, per_minute=10, per_day=1000, **config):
    cfg = GeminiConfig(base_url=fake.url, model="gemini-2.5-flash", requests_per_minute=per_minute,
                       requests_per_day=per_day, **config)
    budget = RequestBudget(per_minute, per_day, backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s)
    return budget, [GeminiDetector(cfg, KEY, budget, labels=["red_block"], clock=clock) for _ in range(n)]


def test_request_shape_and_box_2d_back_to_pixels(fake, clock):
    _, (detector,) = _detectors(fake, clock)
    (found,) = detector.detect(JPEG, 640, 360)
    assert found.label == "red_block"
    # box_2d [ymin, xmin, ymax, xmax] / 1000 of the real 640x360 frame
    assert found.box == pytest.approx((64.0, 90.0, 192.0, 180.0))
    assert found.pixel == pytest.approx((128.0, 135.0))
    (request,) = fake.requests
    assert request.problems == []
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent" and request.query == ""
    assert request.headers["x-goog-api-key"] == KEY
    inline = request.body["contents"][0]["parts"][0]["inline_data"]
    assert base64.b64decode(inline["data"]) == JPEG and inline["mime_type"] == "image/jpeg"
    generation = request.body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseSchema"]["items"]["properties"]["box_2d"]["type"] == "ARRAY"


def test_a_429_holds_back_every_camera_for_its_retry_delay(fake, clock):
    fake.script = ["429"]
    budget, cams = _detectors(fake, clock, n=3)
    with pytest.raises(DetectionSkipped) as first:
        cams[0].detect(JPEG, 640, 360)
    assert first.value.retry_at == pytest.approx(clock.now + 17)  # "retryDelay": "17s"
    for other in cams[1:]:
        with pytest.raises(DetectionSkipped):
            other.detect(JPEG, 640, 360)
    clock.advance(16.5)
    with pytest.raises(DetectionSkipped):
        cams[1].detect(JPEG, 640, 360)
    assert fake.calls == 1  # no cascade: the other cameras never called
    clock.advance(0.5)
    assert cams[2].detect(JPEG, 640, 360)
    assert fake.calls == 2


def test_calls_never_exceed_the_budget_over_three_minutes_of_three_cameras(fake, clock):
    fake.script = ["ok", "ok", "429", "ok", "500", "ok"] * 10
    budget, cams = _detectors(fake, clock, n=3, per_minute=10, backoff_s=3.0)
    intake = FrameIntake({0: 2.0, 1: 2.0, 2: 2.0})
    call_times: list[float] = []
    rate_limited_at: list[float] = []
    for _ in range(180 * 30):  # 30 fps per camera, clock moved by hand
        now = clock.advance(1 / 30)
        for cam, detector in enumerate(cams):
            if not intake.offer(cam, now):
                continue
            before = fake.calls
            try:
                detector.detect(JPEG, 640, 360)
            except DetectionSkipped as exc:
                if exc.reason == "rate limited":
                    rate_limited_at.append(now)
            finally:
                intake.done(cam)
            call_times.extend([now] * (fake.calls - before))
    assert 20 <= len(call_times) <= 30  # 10 a minute for 3 minutes, whatever 90 frames wanted
    for i, t in enumerate(call_times):
        assert sum(1 for u in call_times[i:] if u < t + 60) <= 10
    for t in rate_limited_at:  # after a 429, nobody calls for its 17 s
        assert not [u for u in call_times if t < u < t + 17]
    assert all(r.problems == [] for r in fake.requests)


def test_daily_quota_stops_calls_until_midnight_pacific_and_says_so_once(fake, clock, caplog):
    clock.now = dt.datetime(2026, 11, 21, 15, 0, tzinfo=PACIFIC).timestamp()
    fake.script = ["daily"]
    _, cams = _detectors(fake, clock, n=2)
    with caplog.at_level(logging.INFO):
        for _hour in range(8):
            for detector in cams:
                with pytest.raises(DetectionSkipped):
                    detector.detect(JPEG, 640, 360)
            clock.advance(3600)
    assert fake.calls == 1
    said = [r for r in caplog.records if "daily quota" in r.getMessage()]
    assert len(said) == 1
    clock.now = dt.datetime(2026, 11, 22, 0, 0, 1, tzinfo=PACIFIC).timestamp()
    assert cams[1].detect(JPEG, 640, 360)
    assert fake.calls == 2


@pytest.mark.parametrize("failure", ["500", "503"])
def test_server_errors_back_off(fake, clock, failure):
    fake.script = [failure, failure]
    budget, (detector,) = _detectors(fake, clock, backoff_s=4.0)
    with pytest.raises(DetectionSkipped) as skipped:
        detector.detect(JPEG, 640, 360)
    assert skipped.value.retry_at == pytest.approx(clock.now + 4.0)
    clock.advance(3.9)
    with pytest.raises(DetectionSkipped):
        detector.detect(JPEG, 640, 360)
    assert fake.calls == 1
    clock.advance(0.2)
    with pytest.raises(DetectionSkipped) as again:
        detector.detect(JPEG, 640, 360)
    assert again.value.retry_at == pytest.approx(clock.now + 8.0)  # doubled
    clock.advance(8.0)
    assert detector.detect(JPEG, 640, 360)
    assert fake.calls == 3


def test_a_slow_answer_times_out_and_backs_off(fake, clock):
    fake.script = ["slow"]
    fake.slow_s = 1.0
    budget, (detector,) = _detectors(fake, clock, timeout_s=0.2, backoff_s=5.0)
    with pytest.raises(DetectionSkipped) as skipped:
        detector.detect(JPEG, 640, 360)
    assert skipped.value.reason == "request failed"
    assert skipped.value.retry_at == pytest.approx(clock.now + 5.0)
    assert budget.server_errors == 1


def test_the_key_is_never_logged_nor_shown(fake, clock, caplog):
    fake.script = ["429", "500", "daily", "slow"]
    fake.slow_s = 0.5
    budget, (detector,) = _detectors(fake, clock, timeout_s=0.2)
    wrong = GeminiDetector(detector.config, "AIzaSy-wrong-key-987", budget, clock=clock)
    with caplog.at_level(logging.DEBUG):
        for _ in range(6):
            for d in (detector, wrong):
                try:
                    d.detect(JPEG, 640, 360)
                except DetectionSkipped:
                    pass
                clock.advance(400)
            clock.now = dt.datetime.fromtimestamp(clock.now, PACIFIC).replace(hour=23).timestamp() + 3600
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "HTTP 400" in text  # the wrong key was refused, and that was said
    assert KEY not in text and "AIzaSy-wrong-key-987" not in text
    assert KEY not in repr(detector) and KEY not in str(budget.state(clock.now))
    assert all("key=" not in r.query for r in fake.requests)


def test_gemini_boxes_on_the_overhead_camera_become_table_millimetres(fake, clock):
    tiles = tuple(tabletop.TaggedBox(20 + i, f"tile{i}", 0.5, (60, 60, 60), 0.0, 1.0, 0.0)
                  for i in range(2))
    poses = {20: (120.0, 100.0, 0.0), 21: (280.0, 200.0, 0.0)}
    image, jpeg, truth = camera_image("overhead", width=1280, height=720, boxes=tiles, poses=poses)
    fake.objects = []
    for obj in truth["objects"]:  # what the model answers: a box around each tile, in 0-1000
        u, v = obj["pixel"]
        box = [(v - 20) / 720, (u - 20) / 1280, (v + 20) / 720, (u + 20) / 1280]  # ymin, xmin, ymax, xmax
        fake.objects.append({"label": obj["label"], "box_2d": [round(b * 1000) for b in box]})
    _, (detector,) = _detectors(fake, clock)
    camera = CameraTracking(id=0, role="overhead", detector="gemini",
                            references={str(i): list(p[:2]) for i, p in tabletop.TABLE_REFERENCES.items()})
    world = WorldModel(WorldConfig())
    pipeline = CameraPipeline(camera, world, MarkerFinder(), detector)
    assert len(pipeline.process(image, jpeg, clock.now)) == 2
    found = {o["label"]: o["position_mm"] for o in world.snapshot(clock.now)["objects"]}
    for obj in truth["objects"]:
        assert math.hypot(found[obj["label"]]["x"] - obj["x"], found[obj["label"]]["y"] - obj["y"]) < 5.0
    assert pipeline.status(None)["calls"] == 1 and fake.requests[0].problems == []
