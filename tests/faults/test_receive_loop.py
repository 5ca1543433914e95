"""Nothing in any message stops a receiver: each hostile kind is dropped, counted and logged
once, and the next good frame still arrives — through real sockets on loopback."""

from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest
import zmq

from camfabric import protocol
from camfabric.protocol import topics, wire

JPEG = protocol.encode_jpeg(np.full((24, 32, 3), 90, np.uint8))


def good(seq: int) -> protocol.Frame:
    return protocol.Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=32, h=24,
                          encoding="jpeg", data=JPEG, node="n1")


def header(**changes) -> bytes:
    parts = protocol.encode(good(0))
    return msgpack.packb(msgpack.unpackb(parts[1]) | changes, use_bin_type=True)


def nested(depth: int):
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def sof_patched(width: int, height: int) -> bytes:
    data = bytearray(JPEG)
    i = 2
    while not (data[i] == 0xFF and data[i + 1] == 0xC0):
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    data[i + 5 : i + 9] = bytes([height >> 8, height & 255, width >> 8, width & 255])
    return bytes(data)


def send_good_frames(publisher, sub: protocol.Subscriber, last: int, pause: float) -> None:
    """Publish frames 1..last, paced, and check that the newest one is what `sub` ends with."""
    for seq in range(1, last + 1):
        publisher.publish(good(seq))
        time.sleep(pause)
    deadline = time.monotonic() + 5
    while sub.latest(0, timeout=3).seq != last and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sub.latest(0, timeout=1).seq == last


TOPIC = b"frame/0/jpeg"
HOSTILE = {
    "deep nesting (1000)": [TOPIC, header(frame_id=nested(1000)), JPEG],
    "huge declared array": [TOPIC, b"\x82\xa1v\x01\xa1x\xdd\xff\xff\xff\xff", JPEG],
    "not msgpack": [TOPIC, b"\xc1", JPEG],
    "wrong version": [TOPIC, header(v=2), JPEG],
    "one part": [TOPIC],
    "jpeg bomb (SOF 16384x16384)": [TOPIC, header(), sof_patched(16384, 16384)],
    "pixels over the cap": [TOPIC, header(w=16384, h=16384), sof_patched(16384, 16384)],
    "binary value": [TOPIC, header(frame_id=b"\x00\x01"), JPEG],
    "non-ascii topic": [TOPIC + b"\xff", header(), JPEG],
    "truncated jpeg": [TOPIC, header(), JPEG[:-9]],
}


@pytest.fixture
def publisher(zmq_context):
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub:
        yield pub


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_the_receive_loop_is_alive_after_each_kind_of_hostile_message(kind, publisher, zmq_context):
    with protocol.Subscriber(publisher.endpoint, cameras=[0], context=zmq_context) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        for _ in range(3):
            publisher.publish_parts(HOSTILE[kind], cache=False)
        deadline = time.monotonic() + 5
        while sub.stats.malformed < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.stats.malformed == 3
        publisher.publish(good(41))
        assert sub.latest(0, timeout=3).seq == 41


def test_a_listener_that_raises_never_stops_the_receive_loop(publisher, zmq_context, caplog):
    calls = []

    def broken(msg):
        calls.append(msg)
        raise RecursionError("a bug met by odd input")

    with protocol.Subscriber(publisher.endpoint, cameras=[0], context=zmq_context) as sub:
        sub.add_listener(broken)
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        with caplog.at_level(logging.ERROR):
            send_good_frames(publisher, sub, 29, pause=0.005)
        assert len(calls) > 1
    assert sum("listener" in r.getMessage() for r in caplog.records) == 1


def test_bad_messages_whose_text_varies_are_logged_once_per_kind(publisher, zmq_context, caplog):
    with protocol.Subscriber(publisher.endpoint, cameras=[0], context=zmq_context, rcvhwm=10_000) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        with caplog.at_level(logging.WARNING):
            for i in range(2000):  # every one names a different size or version
                bad = [TOPIC, header(v=100 + i), JPEG] if i % 2 else [TOPIC, header(w=20000 + i), JPEG]
                publisher.publish_parts(bad, cache=False)
                if i % 50 == 0:
                    time.sleep(0.01)  # let the owner thread drain its inbox
            # Some were dropped on the way by high-water marks: wait until the count settles.
            deadline, last = time.monotonic() + 10, -1
            while sub.stats.malformed != last and time.monotonic() < deadline:
                last = sub.stats.malformed
                time.sleep(0.3)
        publisher.publish(good(7))
        assert sub.latest(0, timeout=3).seq == 7
        assert sub.stats.malformed >= 100  # the rest were dropped by high-water marks, unseen
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in lines]


def test_a_message_part_over_the_size_limit_is_refused_by_the_socket(publisher, zmq_context):
    # A raw PUB, not our Publisher: it sends a 65 MiB part no encoder would make. The
    # subscriber also listens to a well-behaved publisher, whose frames must keep coming.
    hostile = zmq_context.socket(zmq.PUB)
    hostile.linger = 0
    port = hostile.bind_to_random_port("tcp://127.0.0.1")
    try:
        with protocol.Subscriber([f"tcp://127.0.0.1:{port}", publisher.endpoint], cameras=[0],
                                 context=zmq_context) as sub:
            assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
            time.sleep(0.5)  # the subscription reaches the hostile PUB too
            big = b"\xff\xd8" + bytes(wire.MAX_PAYLOAD + 1024) + b"\xff\xd9"
            hostile.send_multipart([TOPIC, header(), big])
            send_good_frames(publisher, sub, 19, pause=0.05)
            # libzmq dropped that connection before buffering the part: never received,
            # never decoded.
            assert sub.stats.malformed == 0
    finally:
        hostile.close(linger=0)


def test_a_forged_sequence_number_cannot_inflate_the_drop_count(publisher, zmq_context, caplog):
    # One forged header once made `dropped` read 4.6e21. A gap counts only as far as a camera
    # could have captured frames in the time between the two arrivals.
    with protocol.Subscriber(publisher.endpoint, cameras=[0], context=zmq_context) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)

        def deliver(seq: int) -> None:
            publisher.publish(good(seq))
            deadline = time.monotonic() + 3
            while sub.latest(0, timeout=3).seq != seq and time.monotonic() < deadline:
                time.sleep(0.005)
            assert sub.latest(0, timeout=1).seq == seq

        with caplog.at_level(logging.WARNING):
            for seq in (1, 2, 2**62, 3, 2**63 - 1, 4):
                deliver(seq)
            assert sub.stats.dropped == 0
            deliver(7)  # two frames lost: a real gap, counted as it is
            assert sub.stats.dropped == 2
    jumps = [r for r in caplog.records if "sequence number jumped" in r.getMessage()]
    assert len(jumps) == 1
