"""Publisher and Subscriber over real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import http.server
import itertools
import os
import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np
import psutil
import pytest
import zmq

from camfabric import protocol
from camfabric.protocol import topics, wire
from camfabric.protocol.demand import Demand
from camfabric.runtime.clock import ManualClock

from ..gateway.support import wait_until

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
        # A camera that lost three frames took the time to capture them: a gap is counted only
        # when the arrivals are far enough apart for the fastest camera (forged seqs are not).
        time.sleep(4 / wire.MAX_FPS)
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
            with pytest.raises(protocol.FrameTimeout, match="refused this client's CURVE key"):
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


# -- honest ages ------------------------------------------------------------------------------

def test_a_replayed_frame_carries_the_time_it_waited_in_the_cache(zmq_context):
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context,
                            replay_max_age_s=30.0) as pub:
        with subscriber(pub, zmq_context, cameras=[0]) as first:
            assert pub.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
            pub.publish(frame(seq=1))
            first.latest(0, timeout=2)
        time.sleep(1.0)
        with subscriber(pub, zmq_context, cameras=[0]) as late:
            got = late.latest(0, timeout=2)
            true_age = time.time_ns() - got.t_capture_ns  # one host: the truth
            reported = got.age_ns()
    assert got.seq == 1
    assert true_age >= 10**9
    assert abs(reported - true_age) < 200_000_000, (reported, true_age)


def test_a_cached_frame_older_than_the_bound_is_not_replayed(zmq_context):
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context,
                            replay_max_age_s=0.3) as pub:
        pub.publish(frame(seq=1))
        pub.publish(protocol.Meta(cam=0, node="n1", registry={}, health={}))
        time.sleep(0.6)
        with subscriber(pub, zmq_context, cameras=[0]) as late:
            with pytest.raises(protocol.FrameTimeout) as info:
                late.latest(0, timeout=0.5)
            assert info.value.heard  # the heartbeat was replayed: only the frame was held back
        assert pub.replays_refused >= 1


def test_frames_delayed_in_flight_report_the_delay_in_their_age(publisher, zmq_context):
    """Frames that waited out a partition arrive late: their age includes the excess over the
    link's quickest transit, though the two hosts' clocks are never compared."""
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        for seq in (1, 2, 3):  # the link's usual: published now, received now
            publisher.publish(frame(seq=seq))
            sub.latest(0, timeout=2, newer_than=sub.latest(0, timeout=2) if seq > 1 else None)
        # A frame captured and published 60 s ago, only delivered now (as after a partition).
        late = frame(seq=4)
        late = protocol.Frame(**{**late.__dict__, "t_capture_ns": time.time_ns() - 60 * 10**9})
        publisher.publish_parts(protocol.encode(late, t_publish_ns=late.t_capture_ns), cache=False)
        got = sub.latest(0, timeout=2, newer_than=sub.latest(0, timeout=1))
        asked = time.monotonic_ns() - 5 * 10**9
        assert got.seq == 4
        assert 59 * 10**9 < got.age_ns() < 62 * 10**9
        assert protocol.captured_locally_ns(got) < asked  # a "captured after" check sees it as old


def test_the_link_baseline_survives_a_silent_link_and_rolls_with_a_stepped_sender_clock():
    delay = protocol.LinkDelay(bucket_s=1.0, buckets=3)
    sec = 10**9
    offset = 1234 * sec  # the two hosts' clocks disagree by this; it must not matter
    for t in range(5):
        assert delay.observe("n", t * sec, t * sec - offset) == 0
    # 60 s of silence, then the backlog arrives: captured 60 s before it is received.
    assert delay.observe("n", 65 * sec, 5 * sec - offset) == 60 * sec
    assert delay.observe("n", 65 * sec + 1, 65 * sec + 1 - offset) == 0  # live again
    # The sender's clock steps back an hour: its messages look delayed until the window rolls.
    assert delay.observe("n", 66 * sec, 66 * sec - offset - 3600 * sec) == 3600 * sec
    for t in range(67, 71):
        last = delay.observe("n", t * sec, t * sec - offset - 3600 * sec)
    assert last == 0
    # The receiver's wall clock plays no part: only its monotonic clock is used.


# -- a Subscriber that survives ordinary use --------------------------------------------------

def grab(endpoint: str, context) -> protocol.Frame:
    """The README's robot example: a fresh Subscriber per call."""
    with protocol.Subscriber(endpoint, cameras=[0], context=context) as sub:
        return sub.latest(0, timeout=2)


def test_fifty_subscribers_back_to_back_in_one_function(zmq_context):
    stop = threading.Event()
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub:
        def stream() -> None:
            seq = 0
            while not stop.wait(0.02):
                seq += 1
                pub.publish(frame(seq=seq))

        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        try:
            grab(pub.endpoint, zmq_context)
            fds = psutil.Process().num_fds()
            got = [grab(pub.endpoint, zmq_context) for _ in range(50)]
            # libzmq closes a connection's descriptor on its own thread, a little later.
            wait_until(lambda: psutil.Process().num_fds() <= fds + 4, timeout=5,
                       what="the descriptors of 50 closed subscribers to be released")
        finally:
            stop.set()
            feeder.join(2)
    assert len(got) == 50 and all(f.cam == 0 for f in got)
    assert [f.seq for f in got] == sorted(f.seq for f in got)


def test_publishing_from_many_short_lived_threads_leaks_no_socket(publisher, zmq_context):
    process = psutil.Process()
    with subscriber(publisher, zmq_context, cameras=[0]) as sub:
        assert publisher.wait_for_subscriber(topics.frame(0, "jpeg"), timeout=3)
        fds = process.num_fds()
        for seq in range(1, 101):
            thread = threading.Thread(target=publisher.publish, args=(frame(seq=seq),))
            thread.start()
            thread.join()

        def newest_arrived() -> bool:
            # A frame the owner thread was too backed up to take is dropped and counted, as on
            # a loaded machine; the next one replaces it, as a camera's next frame would.
            publisher.publish(frame(seq=101))
            return sub.latest(0, timeout=0.5).seq == 101

        wait_until(newest_arrived, timeout=10, what="the newest frame")
        assert process.num_fds() <= fds + 2


def test_a_malformed_endpoint_is_named_with_the_fix():
    with pytest.raises(protocol.EndpointError, match="tcp://127.0.0.1:5550"):
        protocol.Subscriber("127.0.0.1:5550")
    with pytest.raises(protocol.EndpointError, match="HTTP"):
        protocol.Subscriber("http://127.0.0.1:8081")
    with pytest.raises(protocol.EndpointError, match="port"):
        protocol.Subscriber("tcp://127.0.0.1:99999")


def test_an_unknown_encoding_is_refused_at_construction():
    with pytest.raises(protocol.EncodingError, match="jpeg, bgr8, gray8"):
        protocol.Subscriber("tcp://127.0.0.1:5550", encoding="png")
    assert issubclass(protocol.EncodingError, protocol.CamfabricError)


def test_nothing_listening_is_a_timeout_that_says_nothing_was_heard(zmq_context, closed_port):
    with protocol.Subscriber(f"tcp://127.0.0.1:{closed_port}", cameras=[0], context=zmq_context) as sub, \
            pytest.raises(protocol.FrameTimeout, match="nothing at all was heard") as info:
        sub.latest(0, timeout=0.5)
    assert "nothing listens there (connection refused)" in str(info.value)
    assert info.value.heard is False


def test_an_http_port_given_by_mistake_says_nothing_was_heard(zmq_context):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"tcp://127.0.0.1:{server.server_address[1]}"
        with protocol.Subscriber(endpoint, cameras=[0], context=zmq_context) as sub, \
                pytest.raises(protocol.FrameTimeout, match="not the gateway's HTTP port") as info:
            sub.latest(0, timeout=0.5)
        assert info.value.heard is False
        assert "something listens there" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_a_camera_nobody_announces_names_the_announced_ones(publisher, zmq_context):
    with subscriber(publisher, zmq_context) as sub:
        assert publisher.wait_for_subscriber(topics.meta(0), timeout=3)
        for cam in (0, 2):
            publisher.publish(protocol.Meta(cam=cam, node="n1", registry={"id": cam}, health={}))
        wait_until(lambda: len(sub.metas()) == 2, what="both heartbeats")
        with pytest.raises(protocol.UnknownCamera, match="announced on the fabric are: 0, 2") as info:
            sub.latest(5, timeout=0.3)
    assert info.value.announced == [0, 2]


def test_use_after_close_is_its_own_error(publisher, zmq_context):
    sub = subscriber(publisher, zmq_context, cameras=[0]).start()
    sub.close()
    with pytest.raises(protocol.ClosedError, match="closed"):
        sub.latest(0, timeout=1)
    with pytest.raises(protocol.ClosedError):
        sub.subscribe(b"world")
    with pytest.raises(protocol.ClosedError):
        sub.start()


def test_writing_to_a_frames_image_fails_and_the_next_reader_sees_the_original(publisher, zmq_context):
    for encoding in ("jpeg", "bgr8"):
        with subscriber(publisher, zmq_context, cameras=[0], encoding=encoding) as sub:
            assert publisher.wait_for_subscriber(topics.frame(0, encoding), timeout=3)
            publisher.publish(frame(seq=7, encoding=encoding))
            image = sub.latest(0, timeout=2).image
            with pytest.raises(ValueError, match="read-only"):
                image[0, 0] = 255
            assert int(sub.latest(0, timeout=1).image[0, 0, 0]) == int(image[0, 0, 0]) != 255
            mine = image.copy()
            mine[0, 0] = 255  # a private copy is the way to draw
            assert int(sub.latest(0, timeout=1).image[0, 0, 0]) != 255


# -- subscriptions on demand ------------------------------------------------------------------

def test_on_demand_subscribes_while_wanted_and_leaves_after_idle(zmq_context):
    # Time passes on a clock moved by hand, the receiver's idle time and the node's cache alike:
    # a loaded machine that takes longer than idle_s between two lines of this test cannot make
    # the subscription lapse early. Each reading is also a nanosecond after the one before, so
    # what happened first still reads earlier.
    clock, readings = ManualClock(), itertools.count()

    def now_ns() -> int:
        return int(clock.monotonic() * 1e9) + next(readings)

    jpeg = topics.frame(0, "jpeg")
    with protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context, clock=now_ns) as publisher, \
            subscriber(publisher, zmq_context, on_demand=True, idle_s=0.5, clock=now_ns) as sub:
        assert publisher.wait_for_subscriber(topics.meta(0), timeout=3)
        assert not publisher.wants(jpeg)  # heartbeats only
        publisher.publish(frame(seq=1))  # cached: the node answers a new subscriber at once
        assert sub.latest(0, timeout=2).seq == 1
        assert publisher.wants(jpeg)
        clock.advance(0.6)  # idle_s without a call; seq 1 is now past the node's replay bound too
        assert publisher.wait_for_no_subscriber(jpeg, timeout=3)
        publisher.publish(frame(seq=2))  # while nobody subscribes: only the node's cache has it
        assert sub.latest(0, timeout=2).seq == 2  # never the stale seq 1 kept from before
        clock.advance(0.6)
        assert publisher.wait_for_no_subscriber(jpeg, timeout=3)
        with sub.watching(0):
            assert publisher.wait_for_subscriber(jpeg, timeout=3)
            clock.advance(5.0)  # ten times idle_s: held by the block
            time.sleep(0.5)  # the subscriber's sweeps (every 0.2 s) look at it meanwhile
            assert publisher.wants(jpeg)
        sub.release(0)
        clock.advance(0.6)
        assert publisher.wait_for_no_subscriber(jpeg, timeout=3)


def test_a_topic_is_unwanted_once_every_subscriber_left_however_often_each_subscribed(
        publisher, zmq_context):
    # Robot code on plain pyzmq may subscribe one socket to a topic twice. libzmq's SUB then
    # sends both subscriptions but only the last unsubscription (its own count must reach
    # zero; zmq_setsockopt(3): "subscriptions ... are counted"), so a publisher that counted
    # the messages would want the topic forever and the node would encode for nobody.
    jpeg = topics.frame(0, "jpeg")
    publisher.publish(protocol.Meta(cam=0, node="n1", registry={}, health={}))
    a, b = (zmq_context.socket(zmq.SUB) for _ in range(2))
    for sock in (a, b):
        sock.linger = 0
        sock.connect(publisher.endpoint)
    a.setsockopt(zmq.SUBSCRIBE, jpeg)
    a.setsockopt(zmq.SUBSCRIBE, jpeg)
    b.setsockopt(zmq.SUBSCRIBE, jpeg)
    assert publisher.wait_for_subscriber(jpeg, timeout=3)
    a.setsockopt(zmq.UNSUBSCRIBE, jpeg)
    a.setsockopt(zmq.UNSUBSCRIBE, jpeg)
    time.sleep(0.3)  # a's unsubscription has arrived by now
    assert publisher.wants(jpeg)  # b is still there
    b.setsockopt(zmq.UNSUBSCRIBE, jpeg)
    assert publisher.wait_for_no_subscriber(jpeg, timeout=3)
    a.setsockopt(zmq.SUBSCRIBE, jpeg)
    assert publisher.wait_for_subscriber(jpeg, timeout=3)
    a.close()  # a subscriber that goes away without unsubscribing
    assert publisher.wait_for_no_subscriber(jpeg, timeout=3)
    b.close()


def test_subscribers_made_and_closed_on_many_threads_at_once(publisher, zmq_context):
    stop = threading.Event()

    def stream() -> None:
        seq = 0
        while not stop.wait(0.02):
            seq += 1
            publisher.publish(frame(seq=seq))

    threading.Thread(target=stream, daemon=True).start()
    results: list[object] = []

    def robot() -> None:
        try:
            results.extend(grab(publisher.endpoint, zmq_context) for _ in range(3))
        except Exception as exc:  # reported below, with what it was
            results.append(exc)

    threads = [threading.Thread(target=robot) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        stop.set()
    assert [r for r in results if not isinstance(r, protocol.Frame)] == []
    assert len(results) == 24


def test_publisher_side_drops_are_counted_where_they_happen(zmq_context):
    pub = protocol.Publisher("tcp://127.0.0.1:0", context=zmq_context)  # no owner thread yet
    accepted = sum(pub.publish(frame(seq=seq)) for seq in range(1, 101))
    assert accepted + pub.dropped == 100 and pub.dropped > 0  # the mailbox is bounded
    pub.start()
    pub.stop()
    assert pub.publish(frame(seq=101)) is False and accepted + pub.dropped == 101


def test_demand_goes_idle_only_when_nobody_wants_or_holds_it():
    sec = 10**9
    demand = Demand(idle_ns=10 * sec)
    assert demand.want("cam0", 0) is True  # first want: subscribe
    assert demand.want("cam0", 5 * sec) is False
    assert demand.idle(14 * sec) == []  # wanted 9 s ago
    assert demand.idle(16 * sec) == ["cam0"]  # 11 s: unsubscribe, and forget it
    assert demand.want("cam0", 17 * sec) is True  # wanted again: subscribe again
    assert demand.hold("cam1", 17 * sec) is True
    assert demand.release("cam1", 18 * sec) is False  # a block holds it
    assert demand.idle(3600 * sec) == ["cam0"]  # held an hour: still kept
    demand.unhold("cam1", 3600 * sec)
    assert demand.idle(3605 * sec) == []  # the idle period starts when the block ends
    assert demand.release("cam1", 3606 * sec) is True
    assert demand.idle(3606 * sec) == ["cam1"]
