"""SnapshotUploader against the fake Connect over real HTTP, frames from a real fabric, time faked."""

from __future__ import annotations

import logging
import random

import pytest
import requests

from camfabric.protocol.jpeg import is_complete_jpeg, jpeg_size
from camfabric.subscribers.prusa_connect.client import ConnectClient
from camfabric.subscribers.prusa_connect.config import CameraUpload
from camfabric.subscribers.prusa_connect.service import FabricFrames
from camfabric.subscribers.prusa_connect.uploader import Backoff, SnapshotUploader, shrink_jpeg
from tests.fakes.prusa_connect import FakeConnect

from .conftest import TOKEN_A, TOKEN_B, jpeg_for, sha

FINGERPRINT = "camfabric-test-fingerprint-0001"
WALL = 1_700_000_000.0


def make(connect, fabric, *, cam=0, token=TOKEN_A, interval=10.0, timeout=2.0, **kwargs) -> SnapshotUploader:
    camera = CameraUpload(cam=cam, token=token, name=f"Cam {cam}", interval_s=interval)
    client = ConnectClient(connect.url, timeout, requests.Session())
    kwargs.setdefault("rng", random.Random(7))
    return SnapshotUploader(camera, FINGERPRINT, client, FabricFrames(fabric.subscriber),
                            clock_ns=fabric.clock, wall=lambda: WALL + fabric.clock() / 1e9, **kwargs)


def uploaded_seqs(connect, fabric, token=TOKEN_A) -> list[int]:
    return [fabric.published[r.sha256] for r in connect.snapshots(token)]


def test_uploads_the_newest_frame_once_per_interval(connect, fabric):
    up = make(connect, fabric, interval=10.0)
    assert up.tick() is not None and connect.snapshots() == []  # no frame yet
    assert up.status()["state"] == "waiting_for_frame"

    fabric.publish(0, 1)
    wait = up.tick()
    assert uploaded_seqs(connect, fabric) == [1]
    assert wait == pytest.approx(10.0, abs=0.01)

    fabric.publish(0, 2)
    fabric.publish(0, 3)
    fabric.clock.advance(5)
    assert up.tick() == pytest.approx(5.0, abs=0.01)  # not due yet
    assert uploaded_seqs(connect, fabric) == [1]
    fabric.clock.advance(5)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [1, 3]  # the newest, never the one in between

    status = up.status()
    assert status["state"] == "ok" and status["uploads"] == 2 and status["last_error"] == ""
    assert status["last_upload"] == pytest.approx(WALL + fabric.clock() / 1e9, abs=0.01)
    assert status["next_attempt"] == pytest.approx(status["last_upload"] + 10, abs=0.01)
    request = connect.snapshots()[0]
    assert request.headers["content-type"] == "image/jpg"
    assert request.headers["fingerprint"] == FINGERPRINT
    assert int(request.headers["content-length"]) == request.body_size


def test_never_uploads_a_frame_twice(connect, fabric):
    up = make(connect, fabric, interval=1.0)
    fabric.publish(0, 1)
    up.tick()
    for _ in range(3):
        fabric.clock.advance(1.0)
        up.tick()
    assert uploaded_seqs(connect, fabric) == [1]
    assert up.status()["state"] == "waiting_for_frame"
    fabric.publish(0, 2)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [1, 2]


def test_a_frame_older_than_max_age_is_not_uploaded_and_the_camera_reported_stale(connect, fabric, caplog):
    up = make(connect, fabric, interval=1.0, max_age_s=30)
    fabric.publish(0, 1)
    fabric.clock.advance(31)  # the frame has waited 31 s in the subscriber: the camera went quiet
    with caplog.at_level(logging.WARNING):
        up.tick()
        fabric.clock.advance(5)
        up.tick()
    assert connect.snapshots() == []
    status = up.status()
    assert status["state"] == "stale" and "36.0 s old" in status["last_error"]
    assert [r.message for r in caplog.records].count(
        [r.message for r in caplog.records if "stopped delivering" in r.message][0]) == 1  # logged once

    fabric.publish(0, 2)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [2]
    assert up.status()["state"] == "ok"


def test_info_follows_the_first_upload_and_every_change_of_resolution(connect, fabric):
    up = make(connect, fabric, interval=1.0)
    fabric.publish(0, 1, w=64, h=48)
    up.tick()
    fabric.clock.advance(1)
    fabric.publish(0, 2, w=64, h=48)
    up.tick()
    assert [r.info["config"]["resolution"] for r in connect.infos()] == [{"width": 64, "height": 48}]
    assert connect.infos()[0].info["config"]["name"] == "Cam 0"
    fabric.clock.advance(1)
    fabric.publish(0, 3, w=96, h=64)
    up.tick()
    assert [r.info["config"]["resolution"] for r in connect.infos()][-1] == {"width": 96, "height": 64}
    assert len(connect.infos()) == 2


def test_both_success_forms_count_as_uploads(fabric):
    with FakeConnect(success="200") as connect:
        connect.add_camera(TOKEN_A)
        up = make(connect, fabric)
        fabric.publish(0, 1)
        up.tick()
        assert connect.requests[0].status == 200
        assert up.status()["uploads"] == 1 and up.status()["state"] == "ok"


def test_backoff_honours_retry_after(connect, fabric):
    up = make(connect, fabric, interval=1.0, retry_max_s=30, max_age_s=300)
    fabric.publish(0, 1)
    connect.fail(503, times=1, retry_after=120)
    wait = up.tick()
    assert wait >= 120  # above the 30 s cap: the server's word wins
    status = up.status()
    assert status["state"] == "backoff" and "503" in status["last_error"]
    assert status["next_attempt"] == pytest.approx(WALL + fabric.clock() / 1e9 + wait, abs=0.01)

    fabric.clock.advance(119)
    up.tick()
    assert len(connect.requests) == 1  # nothing sent before Retry-After ran out
    fabric.clock.advance(wait - 119)
    up.tick()
    assert [r.status for r in connect.requests if r.path == "/c/snapshot"] == [503, 204]
    assert uploaded_seqs(connect, fabric) == [1]
    assert up.status()["state"] == "ok" and up.status()["failures"] == 0


def test_429_with_an_http_date_retry_after_is_honoured(connect, fabric):
    up = make(connect, fabric, interval=1.0, retry_max_s=5)
    fabric.publish(0, 1)
    connect.fail(429, times=1, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    assert up.tick() == 3600  # a far date is capped at an hour, never waited on forever


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(connect, fabric, caplog):
    up = make(connect, fabric, interval=2.0, retry_max_s=20, max_age_s=1000)
    fabric.publish(0, 1)
    connect.outage(500)
    delays = []
    with caplog.at_level(logging.WARNING):
        for _ in range(7):
            delays.append(up.tick())
            fabric.clock.advance(delays[-1])
    ceilings = [2, 4, 8, 16, 20, 20, 20]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not in lockstep with other cameras
    assert len(connect.requests) == 7
    assert sum("upload failed" in r.message for r in caplog.records) == 1  # once per distinct failure

    connect.end_outage()
    up.tick()
    assert uploaded_seqs(connect, fabric) == [1] and up.status()["state"] == "ok"


def test_timeouts_and_dropped_connections_are_retried(connect, fabric):
    up = make(connect, fabric, interval=1.0, timeout=0.3, retry_max_s=5)
    fabric.publish(0, 1)
    connect.slow(1.0, times=1)
    up.tick()
    status = up.status()
    assert status["state"] == "backoff" and "no answer within 0.3 s" in status["last_error"]
    fabric.clock.advance(5)
    connect.drop(times=1)
    up.tick()
    assert up.status()["state"] == "backoff" and "cannot reach" in up.status()["last_error"]
    fabric.clock.advance(10)
    up.tick()
    assert up.status()["state"] == "ok" and up.status()["uploads"] == 1


def test_a_revoked_token_stops_the_camera_with_what_to_do(connect, fabric, caplog):
    up = make(connect, fabric, interval=1.0)
    fabric.publish(0, 1)
    up.tick()
    connect.revoke(TOKEN_A)
    fabric.publish(0, 2)
    fabric.clock.advance(1)
    with caplog.at_level(logging.ERROR):
        assert up.tick() is None
    status = up.status()
    assert status["state"] == "stopped" and status["next_attempt"] is None
    assert "401" in status["last_error"] and "regenerate the token" in status["last_error"]
    assert any("regenerate the token" in r.message for r in caplog.records if r.levelno == logging.ERROR)
    fabric.publish(0, 3)
    fabric.clock.advance(60)
    assert up.tick() is None
    assert len(connect.requests) == 3  # snapshot, info, the refused snapshot — then nothing


def test_a_token_bound_to_another_fingerprint_stops_the_camera(fabric):
    with FakeConnect() as connect:
        connect.add_camera(TOKEN_B, fingerprint="some-other-device-fingerprint")
        up = make(connect, fabric, token=TOKEN_B)
        fabric.publish(0, 1)
        assert up.tick() is None
        status = up.status()
        assert status["state"] == "stopped" and "Invalid fingerprint" in status["last_error"]
        assert "re-add the camera" in status["last_error"]


def test_a_frame_over_the_limit_is_recompressed_to_fit(connect, fabric):
    up = make(connect, fabric, max_bytes=8000)
    big = fabric.publish(0, 1, w=320, h=240, noise=True)
    assert len(big) > 8000
    up.tick()
    [request] = connect.snapshots()
    assert request.body_size <= 8000
    assert up.status()["uploads"] == 1


def test_a_413_from_connect_lowers_the_limit_for_the_next_frames(fabric):
    with FakeConnect(max_bytes=60_000) as connect:
        connect.add_camera(TOKEN_A)
        up = make(connect, fabric, interval=1.0, max_bytes=200_000)
        first = fabric.publish(0, 1, w=320, h=240, noise=True)
        assert 60_000 < len(first) < 100_000
        up.tick()
        assert connect.requests[0].status == 413
        assert up.status()["state"] != "stopped" and "413" in up.status()["last_error"]
        # The limit halves per refusal (200 000 -> 100 000 -> 65 536, its floor): the second
        # frame still goes whole and is refused, the third is recompressed and accepted.
        for seq in (2, 3):
            fabric.clock.advance(1)
            fabric.publish(0, seq, w=320, h=240, noise=True)
            up.tick()
        snapshots = [r for r in connect.requests if r.path == "/c/snapshot"]
        assert [r.status for r in snapshots] == [413, 413, 204]
        assert snapshots[-1].body_size <= 60_000 and up.status()["rejected"] == 2


def test_shrink_keeps_a_whole_jpeg_and_says_when_it_cannot():
    data = jpeg_for(5, 640, 480, noise=True)
    small = shrink_jpeg(data, 20_000)
    assert len(small) <= 20_000 and is_complete_jpeg(small)
    assert jpeg_size(small)[0] <= 640
    with pytest.raises(Exception, match="fits in 10 bytes"):
        shrink_jpeg(data, 10)


def test_backoff_jitter_stays_between_half_and_the_full_step():
    backoff = Backoff(base_s=1.0, cap_s=60.0)
    rng = random.Random(3)
    for failures in range(1, 12):
        ceiling = min(60.0, 2.0 ** (failures - 1))
        for _ in range(20):
            assert ceiling / 2 <= backoff.delay(failures, None, rng) <= ceiling
    assert backoff.delay(1, 90.0, rng) == 90.0


def test_sha_of_uploaded_body_matches_published_frame(connect, fabric):
    up = make(connect, fabric)
    data = fabric.publish(0, 42)
    up.tick()
    assert connect.snapshots()[0].sha256 == sha(data)


def test_a_camera_that_never_delivers_is_reported_once(connect, fabric, caplog):
    up = make(connect, fabric, cam=1, token=TOKEN_B, max_age_s=30)
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            up.tick()
            fabric.clock.advance(20)
    status = up.status()
    assert status["state"] == "waiting_for_frame"
    assert "no frame of camera 1 from the fabric" in status["last_error"]
    assert sum("no frame of camera 1" in r.message for r in caplog.records) == 1
    assert connect.requests == []


def test_a_late_wake_up_does_not_shift_the_schedule(connect, fabric):
    up = make(connect, fabric, interval=10.0)
    fabric.publish(0, 1)
    up.tick()
    fabric.publish(0, 2)
    fabric.clock.advance(10.3)  # the thread woke 0.3 s late
    assert up.tick() == pytest.approx(9.7, abs=0.01)
    assert uploaded_seqs(connect, fabric) == [1, 2]
