"""SnapshotUploader against the fake Connect over real HTTP, frames from a real fabric, time faked.

The uploader, the fabric's receive stamps and the fake Connect's rate limit share one fake
clock, so "one snapshot per 10 s" is checked where Connect checks it: at the server.
"""

from __future__ import annotations

import logging
import random
import time

import pytest
import requests

from camfabric.protocol import Meta
from camfabric.protocol.jpeg import is_complete_jpeg, jpeg_size
from camfabric.subscribers.prusa_connect.client import ConnectClient
from camfabric.subscribers.prusa_connect.config import CameraUpload
from camfabric.subscribers.prusa_connect.service import FabricFrames
from camfabric.subscribers.prusa_connect.uploader import (
    RECHECK_S,
    TOKEN_RECHECK_S,
    SnapshotUploader,
    shrink_jpeg,
)
from tests.fakes.prusa_connect import FakeConnect

from .conftest import TOKEN_A, TOKEN_B, jpeg_for, sha

FINGERPRINT = "camfabric-test-fingerprint-0001"
WALL = 1_700_000_000.0


def make(connect, fabric, *, cam=0, token=TOKEN_A, interval=10.0, timeout=2.0, frames=None,
         **kwargs) -> SnapshotUploader:
    connect.clock = lambda: fabric.clock() / 1e9  # Connect's rate limit on the test's clock
    camera = CameraUpload(cam=cam, token=token, name=f"Cam {cam}", interval_s=interval)
    client = ConnectClient(connect.url, timeout, requests.Session())
    kwargs.setdefault("rng", random.Random(7))
    kwargs.setdefault("wall", lambda: WALL + fabric.clock() / 1e9)
    return SnapshotUploader(camera, FINGERPRINT, client, frames or FabricFrames(fabric.subscriber),
                            clock_ns=fabric.clock, **kwargs)


CAPTURE_AFTER_S = 0.5  # from an upload's turn (its subscription) to the frame's capture


def deliver(up, fabric, seq, *, cam=0, **frame) -> float | None:
    """Move the clock to the uploader's next upload, let it subscribe, publish frame `seq`
    (captured after the subscription) and tick once more; what that tick returned."""
    wait = up.tick()
    for _ in range(20):
        if up.subscribed or wait is None:
            break
        fabric.clock.advance(wait)
        wait = up.tick()
    assert up.subscribed, "the uploader never subscribed to its camera"
    # The frame is captured after the subscription: on this hand-moved clock, by more than its
    # real time in flight (which a frame's local capture estimate subtracts).
    fabric.clock.advance(CAPTURE_AFTER_S)
    fabric.publish(cam, seq, **frame)
    return up.tick()


def uploaded_seqs(connect, fabric, token=TOKEN_A) -> list[int]:
    return [fabric.published[r.sha256] for r in connect.snapshots(token)]


def gaps(records) -> list[float]:
    return [round(b.time - a.time, 6) for a, b in zip(records, records[1:], strict=False)]


def test_uploads_the_newest_frame_once_per_interval_subscribed_only_around_it(connect, fabric):
    up = make(connect, fabric, interval=10.0)
    assert up.tick() == RECHECK_S and connect.snapshots() == []  # due at once: subscribed, no frame yet
    assert up.subscribed and up.status()["state"] == "waiting_for_frame"

    fabric.clock.advance(0.1)
    fabric.publish(0, 1)
    wait = up.tick()
    assert uploaded_seqs(connect, fabric) == [1]
    assert wait == pytest.approx(10.0, abs=0.01)
    assert not up.subscribed  # nothing is received for the uploader between uploads

    fabric.clock.advance(5)
    assert up.tick() == pytest.approx(5.0, abs=0.01)  # until it is due: nothing wanted before
    assert not up.subscribed
    fabric.clock.advance(5)
    assert up.tick() == RECHECK_S and up.subscribed  # due: subscribed, waiting for a frame
    fabric.clock.advance(0.5)
    fabric.publish(0, 2)
    fabric.publish(0, 3)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [1, 3]  # the newest, never the one in between
    assert not up.subscribed  # let go as soon as the frame was in hand
    # the interval, and the time the first frame after the subscription took to come
    assert gaps(connect.snapshots()) == [10.5]

    status = up.status()
    assert status["state"] == "ok" and status["uploads"] == 2 and status["last_error"] == ""
    assert status["last_upload"] == pytest.approx(WALL + fabric.clock() / 1e9, abs=0.01)
    assert status["next_attempt"] == pytest.approx(status["last_upload"] + 10, abs=0.01)
    request = connect.snapshots()[0]
    assert request.headers["content-type"] == "image/jpg"
    assert request.headers["fingerprint"] == FINGERPRINT
    assert int(request.headers["content-length"]) == request.body_size


def test_a_frame_from_before_the_subscription_is_never_uploaded(connect, fabric):
    up = make(connect, fabric, interval=10.0, max_age_s=300)
    deliver(up, fabric, 1)
    for _ in range(3):  # due again, but the camera sends nothing new: the kept frame 1 waits
        fabric.clock.advance(10.0)
        up.tick()
        fabric.clock.advance(1.0)
        up.tick()
    assert uploaded_seqs(connect, fabric) == [1]
    assert up.status()["state"] == "waiting_for_frame" and up.subscribed
    fabric.clock.advance(0.1)
    fabric.publish(0, 2)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [1, 2]


def test_a_frame_older_than_max_age_is_not_uploaded_and_the_camera_reported_stale(connect, fabric, caplog):
    up = make(connect, fabric, max_age_s=30)
    up.tick()
    fabric.clock.advance(0.1)
    fabric.publish(0, 1)
    fabric.clock.advance(31)  # the frame has waited 31 s in the subscriber: the camera went quiet
    with caplog.at_level(logging.WARNING):
        up.tick()
        fabric.clock.advance(5)
        up.tick()
    assert connect.snapshots() == []
    status = up.status()
    assert status["state"] == "stale" and "36.0 s old" in status["last_error"]
    assert sum("stopped delivering" in r.message for r in caplog.records) == 1  # logged once

    assert up.subscribed  # still listening for the camera to come back
    fabric.publish(0, 2)
    up.tick()
    assert uploaded_seqs(connect, fabric) == [2]
    assert up.status()["state"] == "ok"


def test_a_frame_kept_from_the_last_turn_is_no_sign_of_a_stale_camera(connect, fabric, caplog):
    """An interval longer than max_age_s: at its turn the subscriber still holds the frame of
    the previous upload, old by design. The camera is not called stale for it; the first frame
    captured after the turn is uploaded."""
    up = make(connect, fabric, interval=60.0, max_age_s=30)
    deliver(up, fabric, 1)
    with caplog.at_level(logging.WARNING):
        fabric.clock.advance(60.0)
        assert up.tick() == RECHECK_S and up.subscribed
        assert up.status()["state"] == "waiting_for_frame" and up.status()["last_error"] == ""
        fabric.clock.advance(CAPTURE_AFTER_S)
        fabric.publish(0, 2)
        up.tick()
    assert uploaded_seqs(connect, fabric) == [1, 2]
    assert not any("stopped delivering" in r.message for r in caplog.records)


def test_info_carries_the_trigger_scheme_and_follows_every_change_of_resolution(connect, fabric):
    up = make(connect, fabric)
    deliver(up, fabric, 1, w=64, h=48)
    deliver(up, fabric, 2, w=64, h=48)
    [info] = [r.info["config"] for r in connect.infos()]
    assert info["resolution"] == {"width": 64, "height": 48}
    assert info["name"] == "Cam 0" and info["trigger_scheme"] == "TEN_SEC"
    deliver(up, fabric, 3, w=96, h=64)
    assert [r.info["config"]["resolution"] for r in connect.infos()][-1] == {"width": 96, "height": 64}
    assert len(connect.infos()) == 2


@pytest.mark.parametrize(("interval", "scheme"), [(10, "TEN_SEC"), (15, "THIRTY_SEC"), (30, "THIRTY_SEC"),
                                                  (45, "SIXTY_SEC"), (600, "TEN_MIN"), (3600, "TEN_MIN")])
def test_the_trigger_scheme_is_the_nearest_one_not_faster_than_the_interval(interval, scheme):
    assert CameraUpload(cam=0, token=TOKEN_A, interval_s=interval).trigger_scheme == scheme


def test_both_success_forms_count_as_uploads(fabric):
    with FakeConnect(success="200") as connect:
        connect.add_camera(TOKEN_A)
        up = make(connect, fabric)
        deliver(up, fabric, 1)
        assert connect.requests[0].status == 200
        assert up.status()["uploads"] == 1 and up.status()["state"] == "ok"


def test_backoff_honours_retry_after(connect, fabric):
    up = make(connect, fabric, retry_max_s=30, max_age_s=300)
    connect.fail(503, times=1, retry_after=120)
    wait = deliver(up, fabric, 1)
    assert wait >= 120  # above the 30 s cap: the server's word wins
    status = up.status()
    assert status["state"] == "backoff" and "503" in status["last_error"]
    assert status["next_attempt"] == pytest.approx(WALL + fabric.clock() / 1e9 + wait, abs=0.01)

    fabric.clock.advance(119)
    up.tick()
    assert len(connect.requests) == 1  # nothing sent before Retry-After ran out
    deliver(up, fabric, 2)
    assert [r.status for r in connect.requests if r.path == "/c/snapshot"] == [503, 204]
    assert connect.requests[1].time - connect.requests[0].time >= wait
    assert uploaded_seqs(connect, fabric) == [2]
    assert up.status()["state"] == "ok" and up.status()["failures"] == 0


def test_429_with_an_http_date_retry_after_is_honoured(connect, fabric):
    up = make(connect, fabric, retry_max_s=5)
    connect.fail(429, times=1, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    assert deliver(up, fabric, 1) == 3600  # a far date is capped at an hour, never waited on forever


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(connect, fabric, caplog):
    up = make(connect, fabric, retry_max_s=40, max_age_s=1000)
    connect.outage(500)
    delays = []
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 7):
            delays.append(deliver(up, fabric, seq))
    ceilings = [5, 10, 20, 40, 40, 40]  # base min(interval, 5 s), doubling to retry_max_s
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not in lockstep with other cameras
    assert len(connect.requests) == 6
    assert sum("upload failed" in r.message for r in caplog.records) == 1  # once per distinct failure

    connect.end_outage()
    deliver(up, fabric, 7)
    assert uploaded_seqs(connect, fabric) == [7] and up.status()["state"] == "ok"


def test_timeouts_and_dropped_connections_are_retried(connect, fabric):
    up = make(connect, fabric, timeout=0.3, retry_max_s=60)
    connect.drop(times=1)
    deliver(up, fabric, 1)
    assert up.status()["state"] == "backoff" and "cannot reach" in up.status()["last_error"]
    connect.slow(1.0, times=1)
    deliver(up, fabric, 2)
    status = up.status()
    assert status["state"] == "backoff" and "no answer within 0.3 s" in status["last_error"]
    # Connect took the slow snapshot although we gave up on it: the next within 10 s is a 429,
    # and the backoff carries on until Connect takes one again.
    for seq in range(3, 8):
        deliver(up, fabric, seq)
        if up.status()["state"] == "ok":
            break
    assert up.status()["state"] == "ok" and up.status()["uploads"] == 1


def test_a_refused_token_is_rechecked_once_every_15_minutes(connect, fabric, caplog):
    up = make(connect, fabric)
    deliver(up, fabric, 1)
    connect.forbid(TOKEN_A)  # a proxy or a firewall answers 403 for a while
    with caplog.at_level(logging.DEBUG):
        assert deliver(up, fabric, 2) == TOKEN_RECHECK_S
        status = up.status()
        assert status["state"] == "refused" and "403" in status["last_error"]
        assert "regenerate the token" in status["last_error"]
        now = WALL + fabric.clock() / 1e9
        assert status["next_attempt"] == pytest.approx(now + TOKEN_RECHECK_S, abs=0.01)
        refused_at = connect.requests[-1].time

        fabric.clock.advance(TOKEN_RECHECK_S - 5)
        up.tick()
        assert connect.requests[-1].time == refused_at  # nothing in between
        assert deliver(up, fabric, 3) == TOKEN_RECHECK_S  # one request: still refused
        assert connect.requests[-1].time - refused_at == pytest.approx(TOKEN_RECHECK_S + CAPTURE_AFTER_S,
                                                                       abs=0.1)
        connect.allow(TOKEN_A)
        deliver(up, fabric, 4)
    assert up.status()["state"] == "ok" and uploaded_seqs(connect, fabric) == [1, 4]
    snapshots = [r for r in connect.requests if r.path == "/c/snapshot"]
    assert [r.status for r in snapshots] == [204, 403, 403, 204]
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "every 15 minutes" in errors[0]  # said once, not every 15 min
    assert any("accepts the token again" in r.message for r in caplog.records)


def test_a_token_bound_to_another_fingerprint_stops_the_camera_for_good(fabric):
    with FakeConnect() as connect:
        connect.add_camera(TOKEN_B, fingerprint="some-other-device-fingerprint")
        up = make(connect, fabric, token=TOKEN_B)
        assert deliver(up, fabric, 1) is None
        status = up.status()
        assert status["state"] == "stopped" and "Invalid fingerprint" in status["last_error"]
        assert "re-add the camera" in status["last_error"] and status["next_attempt"] is None
        assert not up.subscribed
        fabric.clock.advance(3600)
        assert up.tick() is None
        assert len(connect.requests) == 1


def test_a_frame_over_the_limit_is_recompressed_and_the_info_states_what_was_sent(connect, fabric):
    up = make(connect, fabric, max_bytes=8000)
    big = jpeg_for(1, 320, 240, noise=True)
    assert len(big) > 8000
    deliver(up, fabric, 1, w=320, h=240, data=big)
    [request] = connect.snapshots()
    assert request.body_size <= 8000
    assert up.status()["uploads"] == 1
    sent_w, sent_h = jpeg_size(request.body)
    assert connect.infos()[0].info["config"]["resolution"] == {"width": sent_w, "height": sent_h}


def test_a_413_from_connect_lowers_the_limit_for_the_next_frames(fabric):
    with FakeConnect(max_bytes=60_000) as connect:
        connect.add_camera(TOKEN_A)
        up = make(connect, fabric, max_bytes=200_000)
        first = jpeg_for(1, 320, 240, noise=True)
        assert 60_000 < len(first) < 100_000
        deliver(up, fabric, 1, w=320, h=240, data=first)
        assert connect.requests[0].status == 413
        assert up.status()["state"] != "stopped" and "413" in up.status()["last_error"]
        # The limit halves per refusal (200 000 -> 100 000 -> 65 536, its floor): the second
        # frame still goes whole and is refused, the third is recompressed and accepted.
        for seq in (2, 3):
            deliver(up, fabric, seq, w=320, h=240, noise=True)
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


def test_sha_of_uploaded_body_matches_published_frame(connect, fabric):
    up = make(connect, fabric)
    deliver(up, fabric, 42)
    assert connect.snapshots()[0].sha256 == sha(jpeg_for(42))


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


def test_a_late_wake_up_never_brings_two_snapshots_closer_than_the_interval(connect, fabric):
    up = make(connect, fabric)
    deliver(up, fabric, 1)
    fabric.clock.advance(10.3)  # the thread woke 0.3 s late ...
    up.tick()
    fabric.clock.advance(CAPTURE_AFTER_S)
    fabric.publish(0, 2)
    assert up.tick() == pytest.approx(10.0, abs=0.01)  # ... so the next one is 10 s after this one
    assert uploaded_seqs(connect, fabric) == [1, 2]
    deliver(up, fabric, 3)
    assert gaps(connect.snapshots()) == [10.3 + CAPTURE_AFTER_S, 10.0 + CAPTURE_AFTER_S]
    assert connect.refused(429) == []


def test_two_cameras_at_10_s_for_a_minute_then_a_403_and_its_recheck(connect, fabric):
    """Against the strict fake on one clock: no 429 ever, trigger_scheme in every info, and a
    403 on one camera re-checked 15 minutes later while the other carries on."""
    frames = FabricFrames(fabric.subscriber)
    uploaders = {0: make(connect, fabric, cam=0, token=TOKEN_A, frames=frames),
                 1: make(connect, fabric, cam=1, token=TOKEN_B, frames=frames)}
    seq = {0: 0, 1: 0}
    start = fabric.clock()

    def run_until(t_s: float) -> None:
        while (fabric.clock() - start) / 1e9 < t_s:
            waits = [w for w in (up.tick() for up in uploaders.values()) if w is not None]
            if any(up.subscribed for up in uploaders.values()):
                fabric.clock.advance(0.05)
                for cam, up in uploaders.items():
                    if up.subscribed:  # the camera delivers while someone listens
                        seq[cam] += 1
                        fabric.publish(cam, seq[cam])
                continue
            fabric.clock.advance(max(0.01, min(waits)))

    run_until(61.0)  # six intervals, and the slack of hand-moved steps
    for token in (TOKEN_A, TOKEN_B):
        snaps = connect.snapshots(token)
        assert len(snaps) == 7, [round((r.time - start / 1e9), 2) for r in snaps]  # t = 0, 10, ... 60
        assert all(gap >= 10 for gap in gaps(snaps))
        assert {r.info["config"]["trigger_scheme"] for r in connect.infos(token)} == {"TEN_SEC"}
    assert connect.refused(429) == []

    connect.forbid(TOKEN_A)
    run_until(75)
    assert uploaders[0].state == "refused"
    refused_at = connect.refused(403, TOKEN_A)[0].time
    connect.allow(TOKEN_A)  # the proxy lets it through again
    run_until(75 + TOKEN_RECHECK_S)
    a_after = [r for r in connect.requests if r.token == TOKEN_A and r.time > refused_at]
    assert a_after and a_after[0].time - refused_at == pytest.approx(TOKEN_RECHECK_S, abs=1.0)
    assert a_after[0].ok and uploaders[0].state == "ok"
    b_gaps = gaps(connect.snapshots(TOKEN_B))
    assert len(connect.snapshots(TOKEN_B)) >= 7 + 85 and all(gap >= 10 for gap in b_gaps)
    assert connect.refused(429) == [] and not connect.errors


def test_a_wall_clock_stepped_an_hour_either_way_moves_no_upload(connect, fabric):
    step = [0.0]
    up = make(connect, fabric, wall=lambda: WALL + step[0] + fabric.clock() / 1e9)
    deliver(up, fabric, 1)
    for seq, jump in ((2, 3600.0), (3, -7200.0)):  # NTP steps the Pi's clock forward, then back
        step[0] += jump
        status = up.status()
        assert status["next_attempt"] == pytest.approx(WALL + step[0] + fabric.clock() / 1e9 + 10, abs=0.01)
        assert deliver(up, fabric, seq) == pytest.approx(10.0, abs=0.01)
    assert gaps(connect.snapshots()) == [10.0 + CAPTURE_AFTER_S] * 2 and connect.refused(429) == []
    assert uploaded_seqs(connect, fabric) == [1, 2, 3]


def test_a_camera_name_from_the_fabric_is_cut_to_connects_64_characters(connect, fabric):
    long_name = "Overhead camera looking at the print bed from the front left corner of the enclosure"
    assert len(long_name) > 64
    fabric.publisher.publish(Meta(cam=0, node="test", registry={"name": long_name}, health={}))
    deadline = time.monotonic() + 3
    while fabric.subscriber.meta(0) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    camera = CameraUpload(cam=0, token=TOKEN_A)  # no name of its own: the fabric's is used
    up = SnapshotUploader(camera, FINGERPRINT, ConnectClient(connect.url, 2.0, requests.Session()),
                          FabricFrames(fabric.subscriber), clock_ns=fabric.clock)
    connect.clock = lambda: fabric.clock() / 1e9
    deliver(up, fabric, 1)
    [info] = connect.infos()
    assert info.info["config"]["name"] == long_name[:64]
