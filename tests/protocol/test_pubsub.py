"""Publisher and Subscriber over real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse

import numpy as np
import pytest

from camfabric import protocol
from camfabric.protocol import topics

JPEG = protocol.encode_jpeg(np.full((24, 32, 3), 128, np.uint8))


def frame(cam: int = 0, seq: int = 1, encoding: str = "jpeg", node: str = "n1") -> protocol.Frame:
    if encoding == "jpeg":
        return protocol.Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=32, h=24,
                              encoding="jpeg", data=JPEG, node=node)
    image = np.full((24, 32, 3), seq % 256, np.uint8)
    return protocol.Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=32, h=24,
                          encoding="bgr8", data=image.tobytes(), step=96, node=node)


@pytest.fixture
def publisher(zmq_context):
    pub = protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context).start()
    yield pub
    pub.stop()


def subscriber(pub, zmq_context, **kwargs) -> protocol.Subscriber:
    return protocol.Subscriber(pub.endpoint, context=zmq_context, **kwargs)


def test_publisher_sees_who_wants_what_and_forgets_them_when_they_leave(publisher, zmq_context):
    assert not publisher.wants(topics.frame(0, "jpeg"))
    with subscriber(publisher, zmq_context, cameras=[0], encoding="jpeg"):
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        assert not publisher.wants(topics.frame(0, "bgr8"))
        assert not publisher.wants(topics.frame(1, "jpeg"))
    deadline = time.monotonic() + 3
    while publisher.wants(topics.frame(0, "jpeg")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not publisher.wants(topics.frame(0, "jpeg"))


def test_two_subscribers_to_one_topic_are_both_counted(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]), subscriber(publisher, zmq_context, cameras=[0]):
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        time.sleep(0.1)
    # Both left: after the second unsubscribe nobody wants it.
    deadline = time.monotonic() + 3
    while publisher.wants(topics.frame(0, "jpeg")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not publisher.wants(topics.frame(0, "jpeg"))


def test_bgr8_subscriber_gets_numpy_frames_with_shape_and_timestamps(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0], encoding="bgr8") as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "bgr8"), timeout=3)
        before = time.time_ns()
        publisher.publish(frame(seq=5, encoding="bgr8"))
        got = sub.latest(0, timeout=2)
        assert got.image.shape == (24, 32, 3)
        assert got.image.dtype == np.uint8
        assert int(got.image[0, 0, 0]) == 5
        assert before - 10**9 < got.t_capture_ns <= got.t_publish_ns <= time.time_ns()
        assert 0 <= got.age_ns() < 2 * 10**9


def test_late_joiner_gets_the_last_frame_at_once(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]) as first:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        publisher.publish(frame(seq=9))
        first.latest(0, timeout=2)
        # Nothing more is published: the late joiner must still get seq 9.
        with subscriber(publisher, zmq_context, cameras=[0]) as late:
            assert late.latest(0, timeout=1).seq == 9
        time.sleep(0.1)
        # The re-send also reached the first subscriber, which dropped it as a duplicate.
        assert first.stats.duplicates >= 1
        assert first.latest(0, timeout=1).seq == 9


def test_malformed_messages_are_counted_and_the_receiver_carries_on(publisher, zmq_context, caplog):
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        for junk in ([b"frame/0/jpeg", b"\xc1", b"x"],
                     [b"frame/0/jpeg", b"\x81\xa1v\x02", JPEG],
                     [b"frame/0/jpeg"]):
            publisher.publish_parts(junk, cache=False)
        publisher.publish(frame(seq=3))
        assert sub.latest(0, timeout=2).seq == 3
        assert sub.stats.malformed == 3
    assert "malformed" in caplog.text


def test_slow_consumer_sees_the_newest_frame_and_skips_are_counted(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        for seq in range(1, 51):
            publisher.publish(frame(seq=seq))
            time.sleep(0.002)
        deadline = time.monotonic() + 2
        while sub.latest(0, timeout=2).seq != 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.latest(0, timeout=1).seq == 50
        first = sub.poll(timeout=1)
        assert first is not None and first.seq == 50  # not a backlog from seq 1
        assert sub.poll(timeout=0.05) is None
        stats = sub.stats
        assert stats.skipped + stats.dropped + 1 >= 49  # every earlier frame accounted for


def test_sequence_gaps_are_counted_as_drops(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        publisher.publish(frame(seq=1))
        sub.latest(0, timeout=2)
        publisher.publish(frame(seq=5))
        first = sub.latest(0, timeout=2, newer_than=sub.latest(0, timeout=0))
        assert first.seq == 5
        assert sub.stats.dropped == 3


def test_subscriber_without_camera_list_discovers_cameras_from_meta(publisher, zmq_context):
    with subscriber(publisher, zmq_context) as sub:
        assert publisher.wait_for_subscriber(topics.meta(7), timeout=3)
        publisher.publish(protocol.Meta(cam=7, node="n1", registry={"id": 7}, health={}))
        assert publisher.wait_for_subscriber(topics.frame(7, "jpeg"), timeout=3)
        publisher.publish(frame(cam=7, seq=2))
        assert sub.latest(7, timeout=2).seq == 2
        assert sub.meta(7).registry == {"id": 7}


def test_unknown_camera_and_timeout_are_typed_errors(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        with pytest.raises(protocol.UnknownCamera):
            sub.latest(1, timeout=0.1)
        with pytest.raises(protocol.FrameTimeout):
            sub.latest(0, timeout=0.1)


def test_captured_after_waits_for_a_frame_newer_than_the_request(publisher, zmq_context):
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        publisher.publish(frame(seq=1))
        sub.latest(0, timeout=2)
        asked = time.monotonic_ns()
        with pytest.raises(protocol.FrameTimeout):
            sub.latest(0, timeout=0.1, captured_after_ns=asked)
        publisher.publish(frame(seq=2))
        assert sub.latest(0, timeout=2, captured_after_ns=asked).seq == 2


def test_iteration_yields_new_frames_until_closed(publisher, zmq_context):
    sub = subscriber(publisher, zmq_context, cameras=[0, 1]).start()
    assert publisher.wait_for_subscriber(topics.frame(1, "jpeg"), timeout=3)
    publisher.publish(frame(cam=0, seq=1))
    publisher.publish(frame(cam=1, seq=1))
    seen = []
    for got in sub:
        seen.append(got.cam)
        if len(seen) == 2:
            break
    sub.close()
    assert sorted(seen) == [0, 1]
    assert list(sub) == []


def test_publisher_refuses_a_lan_address_without_curve_keys(zmq_context):
    with pytest.raises(protocol.CamfabricError, match="CURVE"):
        protocol.Publisher("tcp://0.0.0.0:0", context=zmq_context).start()


def test_publisher_reports_an_address_in_use(publisher, zmq_context):
    with pytest.raises(protocol.CamfabricError, match="cannot publish on .*Address already in use"):
        protocol.Publisher(publisher.endpoint, context=zmq_context).start()


def test_curve_admits_authorised_clients_only(tmp_path, zmq_context):
    server_pub, server_secret = protocol.generate_keypair(tmp_path / "server", "node")
    _, good_secret = protocol.generate_keypair(tmp_path / "authorized", "robot")
    _, bad_secret = protocol.generate_keypair(tmp_path / "strangers", "intruder")
    keys = protocol.CurveServer(server_secret, tmp_path / "authorized")
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context, curve=keys) as pub:
        good = protocol.CurveClient(good_secret, server_pub)
        bad = protocol.CurveClient(bad_secret, server_pub)
        with subscriber(pub, zmq_context, cameras=[0], curve=good) as ok, \
                subscriber(pub, zmq_context, cameras=[1], curve=bad) as refused:
            assert pub.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
            time.sleep(0.3)
            assert not pub.wants(topics.frame(1, "jpeg"))
            pub.publish(frame(cam=0, seq=4))
            pub.publish(frame(cam=1, seq=4))
            assert ok.latest(0, timeout=2).seq == 4
            with pytest.raises(protocol.FrameTimeout):
                refused.latest(1, timeout=0.3)


def test_raw_garbage_on_the_publishers_port_changes_nothing_for_subscribers(publisher, zmq_context):
    address = urlparse(publisher.endpoint)
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        for junk in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(200_000), b"\xff" + bytes(9) + b"\x7f"):
            with socket.create_connection((address.hostname, address.port), timeout=2) as raw:
                try:
                    raw.sendall(junk)
                    raw.settimeout(0.5)
                    raw.recv(64)  # the publisher answers its greeting, then drops the stranger
                except OSError:
                    pass  # dropped mid-send: also fine
        publisher.publish(frame(seq=21))
        assert sub.latest(0, timeout=2).seq == 21
        assert sub.stats.malformed == 0
        assert publisher.wants(topics.frame(0, "jpeg"))
