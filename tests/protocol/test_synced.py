"""`Subscriber.synced()` over real capture nodes on loopback: two nodes, cameras on both, 30 fps."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from contextlib import ExitStack

import numpy as np
import pytest

from camfabric.capture_node.config import NodeConfig, demo_cameras
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import (
    Frame,
    FrameTimeout,
    Publisher,
    Subscriber,
    SyncTimeout,
    UnknownCamera,
    encode,
    encode_jpeg,
)
from camfabric.protocol.sync import DEFAULT_DEPTH

MS = 1_000_000
HOUR_NS = 3600 * 10**9
FPS = 30
JPEG = encode_jpeg(np.zeros((8, 8, 3), np.uint8))  # a real one: receivers check its SOF


def start_node(stack: ExitStack, zmq_context, name: str, cams: list[int], fps: float = FPS) -> CaptureNode:
    cameras = tuple(c for c in demo_cameras(160, 120, fps) if c.id in cams)
    config = NodeConfig(name=name, publish="tcp://127.0.0.1:0", cameras=cameras)
    return stack.enter_context(CaptureNode(config, context=zmq_context))


def cell_on_two_hosts(stack: ExitStack, zmq_context) -> tuple[CaptureNode, CaptureNode]:
    """Cameras 0 and 1 on host-a, camera 2 on host-b."""
    return (start_node(stack, zmq_context, "host-a", [0, 1]),
            start_node(stack, zmq_context, "host-b", [2]))


def subscribe(stack: ExitStack, zmq_context, nodes, cams: list[int]) -> Subscriber:
    return stack.enter_context(Subscriber([n.endpoint for n in nodes], cameras=cams,
                                          context=zmq_context))


def take(sets, n: int) -> list:
    """`n` sets from the iterator, each with the moment it was handed over."""
    out = []
    for frames in sets:
        out.append((frames, time.monotonic_ns(), time.time_ns()))
        if len(out) == n:
            return out
    raise AssertionError("the iteration ended early")


def check_in_a_row(taken: list, cams: list[int]) -> None:
    previous = None
    for frames, handed_over, wall in taken:
        assert sorted(frames) == cams
        assert frames.spread_ns <= frames.tolerance_ns
        assert frames.age_ns(handed_over) < 300 * MS
        assert all(f.age_ns(handed_over) < 300 * MS for f in frames.values())
        # The nodes run on this host, so their wall clock gives each frame's true age.
        assert all(wall - f.t_capture_ns < 300 * MS for f in frames.values()), \
            {c: (wall - f.t_capture_ns) / MS for c, f in frames.items()}
        if previous is not None:  # never a frame twice
            assert all(frames[c].seq > previous[c].seq for c in cams)
        previous = frames


@pytest.mark.timeout(60)
def test_twenty_sets_in_a_row_from_two_nodes_at_default_tolerance(zmq_context):
    with ExitStack() as stack:
        a = start_node(stack, zmq_context, "host-a", [0])
        b = start_node(stack, zmq_context, "host-b", [2])
        sub = stack.enter_context(Subscriber([a.endpoint, b.endpoint], cameras=[0, 2],
                                             context=zmq_context))
        taken = take(sub.synced_sets([0, 2], timeout=5.0), 20)
    check_in_a_row(taken, [0, 2])
    # Half the slowest camera's interval at 30 fps (measured, so a little slack either way).
    assert all(12 * MS < frames.tolerance_ns < 30 * MS for frames, _, _ in taken)


@pytest.mark.timeout(60)
def test_twenty_triples_in_a_row_from_two_nodes(zmq_context):
    # Three free-running cameras can sit up to two thirds of an interval apart; one interval
    # of tolerance always holds a set.
    with ExitStack() as stack:
        sub = subscribe(stack, zmq_context, cell_on_two_hosts(stack, zmq_context), [0, 1, 2])
        taken = take(sub.synced_sets([0, 1, 2], tolerance_ms=1000 / FPS, timeout=5.0), 20)
    check_in_a_row(taken, [0, 1, 2])
    assert {f.node for frames, _, _ in taken for f in frames.values()} == {"host-a", "host-b"}


@pytest.mark.timeout(60)
def test_a_camera_that_stops_is_named_in_the_timeout(zmq_context):
    with ExitStack() as stack:
        a, b = cell_on_two_hosts(stack, zmq_context)
        sub = subscribe(stack, zmq_context, (a, b), [0, 1, 2])
        first = sub.synced([0, 1, 2], tolerance_ms=1000 / FPS, timeout=5.0)
        b.stop()  # host-b's camera 2 stops; host-a goes on
        # Its last frames may still be on their way and form a set or two; then none forms.
        last, err = first, None
        for _ in range(10):
            try:
                last = sub.synced([0, 1, 2], tolerance_ms=1000 / FPS, timeout=1.0, newer_than=last)
            except SyncTimeout as exc:
                err = exc
                break
        assert err is not None, "sets kept forming after camera 2 stopped"
        assert isinstance(err, FrameTimeout)
        assert 2 in err.missing + err.apart and 0 not in err.missing + err.apart
        assert "camera 2" in str(err) and "camera 0" not in str(err).split(":")[1]
        # The cameras still running still form sets.
        assert sorted(sub.synced([0, 1], tolerance_ms=1000 / FPS, timeout=5.0)) == [0, 1]


@pytest.mark.timeout(60)
def test_two_consumers_of_one_subscriber_each_get_every_new_set(zmq_context):
    got: dict[str, list] = {}

    def consume(name: str, sub: Subscriber) -> None:
        got[name] = take(sub.synced_sets([0, 2], tolerance_ms=1000 / FPS, timeout=5.0), 10)

    with ExitStack() as stack:
        sub = subscribe(stack, zmq_context, cell_on_two_hosts(stack, zmq_context), [0, 2])
        threads = [threading.Thread(target=consume, args=(name, sub)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for name in ("a", "b"):
        check_in_a_row(got[name], [0, 2])


def test_an_unknown_camera_and_a_closed_subscriber(zmq_context):
    with ExitStack() as stack:
        a = start_node(stack, zmq_context, "host-a", [0])
        sub = stack.enter_context(Subscriber(a.endpoint, cameras=[0], context=zmq_context))
        with pytest.raises(UnknownCamera):
            sub.synced([0, 7])
        sets = sub.synced_sets([0], timeout=5.0)
        assert sorted(next(sets)) == [0]
        closer = threading.Timer(0.3, sub.close)
        closer.start()
        started = time.monotonic()
        rest = list(sets)  # ends when the subscriber closes, not at a timeout
        assert time.monotonic() - started < 2.5 and all(sorted(s) == [0] for s in rest)
        closer.join()
        with pytest.raises(FrameTimeout):
            sub.synced([0], timeout=0.5)


@pytest.mark.timeout(60)
def test_a_host_an_hour_ahead_is_matched_on_this_receivers_clock(zmq_context):
    stop = threading.Event()

    def host_an_hour_ahead(pub: Publisher) -> None:
        seq = 0
        while not stop.wait(1 / FPS):
            t_capture = time.time_ns() + HOUR_NS  # its wall clock reads an hour ahead
            frame = Frame(cam=5, seq=seq, t_capture_ns=t_capture, w=8, h=8, encoding="jpeg",
                          data=JPEG, node="host-b")
            pub.publish_parts(encode(frame, t_publish_ns=t_capture + 3 * MS))
            seq += 1

    with ExitStack() as stack:
        a = start_node(stack, zmq_context, "host-a", [0])
        pub = stack.enter_context(Publisher("tcp://127.0.0.1:0", context=zmq_context))
        thread = threading.Thread(target=host_an_hour_ahead, args=(pub,), daemon=True)
        thread.start()
        stack.callback(thread.join, 2)
        stack.callback(stop.set)
        sub = stack.enter_context(Subscriber([a.endpoint, pub.endpoint], cameras=[0, 5],
                                             context=zmq_context))
        frames = sub.synced([0, 5], tolerance_ms=1000 / FPS, timeout=5.0)
        now = time.monotonic_ns()
        assert frames.spread_ns <= 1000 / FPS * MS
        assert frames[5].t_capture_ns - frames[0].t_capture_ns > HOUR_NS / 2
        assert all(f.age_ns(now) < 300 * MS for f in frames.values())


@pytest.mark.timeout(60)
def test_the_history_keeps_no_more_than_a_few_frames_per_camera(zmq_context):
    received: list[weakref.ref] = []
    with ExitStack() as stack:
        a = start_node(stack, zmq_context, "host-a", [0, 1], fps=60)
        sub = stack.enter_context(Subscriber(a.endpoint, cameras=[0, 1], context=zmq_context))
        previous = sub.synced([0, 1], tolerance_ms=20, timeout=5.0)
        sub.add_listener(lambda msg: isinstance(msg, Frame) and received.append(weakref.ref(msg)))
        deadline = time.monotonic() + 20
        while len(received) < 200 and time.monotonic() < deadline:
            previous = sub.synced([0, 1], tolerance_ms=20, timeout=5.0, newer_than=previous)
        assert len(received) >= 200
        del previous
        gc.collect()
        alive = [ref() for ref in received if ref() is not None]
        # The history, the newest frame and the one not yet taken, per camera; never a queue.
        assert len(alive) <= 2 * (DEFAULT_DEPTH + 2), len(alive)


@pytest.mark.timeout(60)
def test_a_late_joiner_gets_a_set_of_fresh_frames_not_the_cached_ones(zmq_context):
    # The node's last-value cache re-sends what it published for an earlier subscriber: frames
    # that waited there are placed by their node's clock, not taken for fresh.
    with ExitStack() as stack:
        a, b = cell_on_two_hosts(stack, zmq_context)
        for _ in range(2):
            with Subscriber([a.endpoint, b.endpoint], cameras=[0, 1, 2], context=zmq_context) as sub:
                frames = sub.synced([0, 1, 2], tolerance_ms=1000 / FPS, timeout=5.0)
                now_wall = time.time_ns()  # the nodes run on this host: their true age, one clock
                assert all(now_wall - f.t_capture_ns < 300 * MS for f in frames.values()), \
                    {c: (now_wall - f.t_capture_ns) / MS for c, f in frames.items()}
            time.sleep(1.0)  # nobody subscribed: the nodes stop encoding, their cache ages
