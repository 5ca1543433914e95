"""The Gemini detector against the strict fake Gemini server on loopback (real HTTP), with
an injected clock: the request it sends, and what it does with every answer the service gives."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import math

import numpy as np
import pytest

from camfabric.protocol.jpeg import encode_jpeg
from camfabric.runtime.backoff import Backoff
from camfabric.runtime.clock import ManualClock
from camfabric.sim import tabletop
from camfabric.subscribers.tracker.budget import PACIFIC, SEND_SLACK_S, RequestBudget
from camfabric.subscribers.tracker.config import DEFAULT_MODEL, CameraTracking, GeminiConfig, WorldConfig
from camfabric.subscribers.tracker.detectors import DetectionSkipped
from camfabric.subscribers.tracker.detectors.aruco import MarkerFinder
from camfabric.subscribers.tracker.detectors.gemini import GeminiDetector, GeminiError, GeminiRefused
from camfabric.subscribers.tracker.intake import CameraGate
from camfabric.subscribers.tracker.pipeline import CameraPipeline
from camfabric.subscribers.tracker.world import WorldModel
from tests.fakes.gemini import FakeGemini

from .conftest import camera_image

KEY = "AIzaSyA-test-secret-key-0123456789abcde"  # shaped like a real key: 39 characters
JPEG = encode_jpeg(np.full((360, 640, 3), 128, np.uint8))
NOON = dt.datetime(2026, 11, 21, 12, 0, tzinfo=PACIFIC).timestamp()


@pytest.fixture
def fake():
    with FakeGemini(api_key=KEY, objects=[{"label": "red_block", "box_2d": [250, 100, 500, 300]}]) as server:
        yield server


@pytest.fixture
def clock():
    return ManualClock(wall=NOON)


def _cameras(fake, clock, n=1, per_minute=1000, per_day=1000, model=DEFAULT_MODEL, key=KEY, **config):
    cfg = GeminiConfig(base_url=fake.url, model=model, requests_per_minute=per_minute,
                       requests_per_day=per_day, **config)
    budget = RequestBudget(per_minute=per_minute, per_day=per_day, clock=clock,
                           backoff=Backoff(base_s=cfg.backoff_s, cap_s=cfg.max_backoff_s, jitter=0.0))
    return budget, [(GeminiDetector(cfg, key, budget, labels=["red_block"], clock=clock),
                     CameraGate(budget, str(i), 2.0, 30.0)) for i in range(n)]


def _detect(camera):
    detector, gate = camera
    return detector.detect(JPEG, 640, 360, gate)


def test_the_request_follows_the_published_contract(fake, clock):
    _, (camera,) = _cameras(fake, clock)
    (found,) = _detect(camera)
    assert found.label == "red_block"
    # box_2d [ymin, xmin, ymax, xmax] / 1000 of the real 640x360 frame
    assert found.box == pytest.approx((64.0, 90.0, 192.0, 180.0))
    assert found.pixel == pytest.approx((128.0, 135.0))
    (request,) = fake.requests
    assert request.status == 200 and request.problems == []
    assert request.path == f"/v1beta/models/{DEFAULT_MODEL}:generateContent" and request.query == ""
    assert request.headers["x-goog-api-key"] == KEY
    inline = request.body["contents"][0]["parts"][0]["inline_data"]
    assert base64.b64decode(inline["data"]) == JPEG and inline["mime_type"] == "image/jpeg"
    generation = request.body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseSchema"]["items"]["properties"]["label"]["enum"] == ["red_block"]
    assert generation["thinkingConfig"] == {"thinkingLevel": "minimal"}  # Gemini 3: least thinking


def test_a_gemini_2_5_flash_model_gets_a_zero_thinking_budget(fake, clock):
    _, (camera,) = _cameras(fake, clock, model="gemini-2.5-flash-lite")
    assert _detect(camera)
    assert fake.requests[0].body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_box_corners_given_the_other_way_round_are_put_back_in_order(fake, clock):
    fake.script = ["swapped"]
    _, (camera,) = _cameras(fake, clock)
    (found,) = _detect(camera)
    assert found.box == pytest.approx((64.0, 90.0, 192.0, 180.0))


def test_a_429_holds_back_every_camera_for_its_retry_delay(fake, clock):
    fake.script = ["429"]
    _, cams = _cameras(fake, clock, n=3)
    with pytest.raises(DetectionSkipped) as first:
        _detect(cams[0])
    assert first.value.retry_at == pytest.approx(clock.monotonic() + 17)  # "retryDelay": "17s"
    clock.step_wall(-3600)  # NTP steps the clock back: the pause still ends 17 s later
    clock.advance(16.5)
    for other in cams:
        with pytest.raises(DetectionSkipped):
            _detect(other)
    assert fake.calls == 1  # no cascade: the other cameras never called
    clock.advance(0.5)
    assert _detect(cams[2])
    assert fake.calls == 2


def test_a_daily_quota_429_stops_calls_until_midnight_pacific_and_says_so_once(fake, clock, caplog):
    fake.script = ["daily"]  # it carries a 37 s retryDelay too, which must not be believed
    _, cams = _cameras(fake, clock, n=2)
    with caplog.at_level(logging.INFO):
        for _half_hour in range(23):
            for camera in cams:
                with pytest.raises(DetectionSkipped):
                    _detect(camera)
            clock.advance(1800)
    assert fake.calls == 1
    assert len([r for r in caplog.records if "daily quota" in r.getMessage()]) == 1
    clock.advance(1800 + 1)  # 12 h after noon: past midnight Pacific
    assert _detect(cams[1])
    assert fake.calls == 2


def test_a_bare_429_backs_off_every_camera(fake, clock):
    fake.script = ["bare429"]
    _, cams = _cameras(fake, clock, n=2, backoff_s=4.0)
    with pytest.raises(DetectionSkipped) as skipped:
        _detect(cams[0])
    assert skipped.value.retry_at == pytest.approx(clock.monotonic() + 4.0)
    with pytest.raises(DetectionSkipped):
        _detect(cams[1])
    assert fake.calls == 1


@pytest.mark.parametrize("failure", ["500", "503", "504"])
def test_server_errors_back_off_doubling_until_a_success(fake, clock, failure):
    fake.script = [failure, failure]
    _, (camera,) = _cameras(fake, clock, backoff_s=4.0)
    with pytest.raises(DetectionSkipped) as skipped:
        _detect(camera)
    assert skipped.value.retry_at == pytest.approx(clock.monotonic() + 4.0)
    clock.advance(3.9)
    with pytest.raises(DetectionSkipped):
        _detect(camera)
    assert fake.calls == 1
    clock.advance(0.2)
    with pytest.raises(DetectionSkipped) as again:
        _detect(camera)
    assert again.value.retry_at == pytest.approx(clock.monotonic() + 8.0)  # doubled
    clock.advance(8.0)
    assert _detect(camera)
    assert fake.calls == 3


def test_a_retired_model_stops_the_camera_and_names_the_key_to_fix(fake, clock):
    _, (camera,) = _cameras(fake, clock, model="gemini-2.5-flash")
    with pytest.raises(GeminiRefused) as err:
        _detect(camera)
    assert "tracker.gemini.model" in str(err.value) and DEFAULT_MODEL in str(err.value)
    clock.advance(3600)
    with pytest.raises(GeminiRefused):
        _detect(camera)
    assert fake.calls == 1  # permanent: never retried


@pytest.mark.parametrize(("key", "status"), [("", 403), ("AIzaSyB-wrong-key-0123456789abcdefghij", 400)])
def test_a_missing_or_wrong_key_stops_the_camera_and_says_where_the_key_goes(fake, clock, key, status):
    _, (camera,) = _cameras(fake, clock, key=key)
    with pytest.raises(GeminiRefused) as err:
        _detect(camera)
    assert fake.requests[0].status == status
    assert "GEMINI_API_KEY" in str(err.value) and "tracker.gemini.api_key" in str(err.value)
    clock.advance(60)
    with pytest.raises(GeminiRefused):
        _detect(camera)
    assert fake.calls == 1


@pytest.mark.parametrize(("behaviour", "said"), [("blocked", "blocked the prompt (SAFETY)"),
                                                 ("max_tokens", "did not finish (MAX_TOKENS)")])
def test_an_unusable_answer_is_an_error_not_a_detection_and_not_an_outage(fake, clock, behaviour, said):
    fake.script = [behaviour]
    budget, (camera,) = _cameras(fake, clock)
    with pytest.raises(GeminiError) as err:
        _detect(camera)
    assert said in str(err.value)
    clock.advance(2.0 + SEND_SLACK_S + 0.05)  # the camera's interval and the send margin
    assert _detect(camera)  # no backoff: the service is up
    assert budget.failures == 0


def test_a_slow_answer_times_out_and_backs_off(fake, clock):
    fake.script = ["slow"]
    fake.slow_s = 1.0
    budget, (camera,) = _cameras(fake, clock, timeout_s=0.2, backoff_s=5.0)
    with pytest.raises(DetectionSkipped) as skipped:
        _detect(camera)
    assert skipped.value.reason == "request failed"
    assert skipped.value.retry_at == pytest.approx(clock.monotonic() + 5.0)
    assert budget.failures == 1


def test_the_key_is_never_logged_nor_shown_even_when_the_server_echoes_it(fake, clock, caplog):
    fake.script = ["echo", "429", "500", "daily", "slow"]
    fake.slow_s = 0.5
    budget, (camera,) = _cameras(fake, clock, timeout_s=0.2)
    wrong = "AIzaSyC-wrong-key-987654321abcdefghijkl"
    _, (refused,) = _cameras(fake, clock, key=wrong)
    with caplog.at_level(logging.DEBUG):
        for _ in range(6):
            for c in (camera, refused):
                try:
                    _detect(c)
                except (DetectionSkipped, GeminiError):
                    pass
            clock.advance(86400)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "HTTP 500" in text and "[key]" in text  # the echo was logged, scrubbed
    assert "HTTP 400" in refused[0].refused
    for secret in (KEY, wrong):
        assert secret not in text
        assert secret not in camera[0].last_error and secret not in refused[0].refused
        assert secret not in repr(camera[0]) and secret not in str(budget.state())
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
    _, ((detector, gate),) = _cameras(fake, clock)
    camera = CameraTracking(id=0, role="overhead", detector="gemini",
                            references={str(i): list(p[:2]) for i, p in tabletop.TABLE_REFERENCES.items()})
    world = WorldModel(WorldConfig())
    pipeline = CameraPipeline(camera, world, MarkerFinder(), detector)
    assert len(pipeline.process(image, jpeg, clock.monotonic(), clock.wall(), gate)) == 2
    found = {o["label"]: o["position_mm"] for o in world.snapshot(clock.monotonic(), clock.wall())["objects"]}
    for obj in truth["objects"]:
        assert math.hypot(found[obj["label"]]["x"] - obj["x"], found[obj["label"]]["y"] - obj["y"]) < 5.0
    assert pipeline.status(None)["calls"] == 1 and fake.requests[0].problems == []
