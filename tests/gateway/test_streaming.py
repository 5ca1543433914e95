"""MJPEG and the server under load, against a real Waitress gateway on 127.0.0.1."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time

import numpy as np
import psutil
import pytest
import requests

from camfabric.gateway.mjpeg import CONTENT_TYPE, FanoutRegistry, MjpegStream, StreamStats
from camfabric.gateway.waitress_seam import request_connection
from camfabric.protocol import Frame, Meta, Publisher, decode_jpeg, encode_jpeg

from .support import (
    Feeder,
    RawHttp,
    announce,
    deliver,
    read_part_by_length,
    read_part_by_markers,
    wait_until,
)


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=3, threads=6, snap_timeout_s=1.0)
    deliver(node, gw.cache, 0)  # a camera with no frame yet answers a new stream with 503
    return gw


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("path", ["/cam/0", "/stream.mjpg", "/?action=stream",
                                  "/?action=stream&cam=0&cacheBust=1"])
def test_mjpeg_parts_read_by_content_length(gateway, node, path, version):
    with Feeder(node, fps=40):
        conn = RawHttp(gateway.url, path, version=version)
        try:
            assert conn.status == 200
            assert conn.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
            assert conn.headers["access-control-allow-origin"] == "*"
            assert conn.headers["cache-control"] == "no-cache"
            parts = [read_part_by_length(conn) for _ in range(8)]
        finally:
            conn.close()
    stamps = [p.timestamp for p in parts]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert abs(stamps[-1] - time.time()) < 2.0
    for p in parts:
        assert p.headers["content-type"] == "image/jpeg"
        assert decode_jpeg(p.jpeg).shape == (48, 64, 3)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_mjpeg_parts_cut_by_jpeg_markers(gateway, node, version):
    with Feeder(node, fps=40):
        conn = RawHttp(gateway.url, "/cam/0", version=version)
        try:
            jpegs = [read_part_by_markers(conn) for _ in range(8)]
        finally:
            conn.close()
    for jpeg in jpegs:
        assert decode_jpeg(jpeg).shape == (48, 64, 3)


def test_a_browser_style_client_reads_the_stream(gateway, node):
    # requests decodes HTTP/1.1 chunked transfer like a browser does.
    with Feeder(node, fps=40), requests.get(gateway.url + "cam/0", stream=True, timeout=5) as resp:
        assert resp.status_code == 200
        data = b""
        for chunk in resp.iter_content(chunk_size=None):
            data += chunk
            if data.count(b"\xff\xd9") >= 3:
                break
    assert data.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")


def test_a_slow_client_skips_frames_and_never_slows_a_fast_one(gateway, node):
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # noise: ~60 KB per JPEG
    with Feeder(node, fps=30, image=big) as feeder:
        slow = RawHttp(gateway.url, "/cam/0", version="1.1", rcvbuf=32 * 1024)
        fast = RawHttp(gateway.url, "/cam/0", version="1.1")
        try:
            started, published_before = time.monotonic(), feeder.published
            fast_parts = 0
            while time.monotonic() - started < 2.0:  # the slow client reads nothing meanwhile
                read_part_by_length(fast)
                fast_parts += 1
            published = feeder.published - published_before
            assert fast_parts >= 0.7 * published, (fast_parts, published)
            # The slow client now reads: after at most a few buffered parts it gets fresh frames.
            parts = [read_part_by_length(slow) for _ in range(25)]
            latest = parts[-1].timestamp
            assert time.time() - latest < 0.5, "the slow client is served stale frames"
            gaps = np.diff([p.timestamp for p in parts])
            assert gaps.max() > 0.5, "frames were queued for the slow client instead of skipped"
        finally:
            slow.close()
            fast.close()


def test_stream_cap_gives_503_and_snapshots_still_answer(gateway, node):
    with Feeder(node, fps=20):
        wait_until(lambda: gateway.cache.latest(0), what="the first frame")
        streams = [RawHttp(gateway.url, "/cam/0") for _ in range(3)]
        try:
            assert [s.status for s in streams] == [200, 200, 200]
            refused = requests.get(gateway.url + "cam/0", timeout=5)
            assert refused.status_code == 503
            assert refused.headers["content-type"].startswith("application/json")
            assert "max_streams" in refused.json()["description"]
            started = time.monotonic()
            for _ in range(20):
                latest = requests.get(gateway.url + "latest/0", timeout=5)
                assert latest.status_code == 200
                assert requests.get(gateway.url + "status", timeout=5).status_code == 200
            assert time.monotonic() - started < 3.0
            assert requests.get(gateway.url + "snap/0", timeout=5).status_code == 200
        finally:
            for s in streams:
                s.close()


def test_a_stream_slot_is_freed_when_its_client_leaves_even_without_frames(gateway, node):
    # The camera has delivered one frame (the fixture) and then nothing more.
    streams = [RawHttp(gateway.url, "/cam/0") for _ in range(3)]
    assert [s.status for s in streams] == [200, 200, 200]
    assert requests.get(gateway.url + "cam/0", timeout=5).status_code == 503
    streams[0].close()  # the camera sends nothing: the slot is freed by noticing the hang-up
    wait_until(lambda: gateway.slots.in_use == 2, timeout=3.0, what="the stream slot freed")
    fresh = RawHttp(gateway.url, "/cam/0")
    assert fresh.status == 200
    for s in [*streams[1:], fresh]:
        s.close()


def test_streams_that_come_and_go_leave_no_descriptor_behind(gateway, node):
    # While the fan-out writes a stream, Waitress does not watch its connection (mjpeg.py
    # `_park`); when the stream ends, the connection must still be closed.
    process = psutil.Process()
    with Feeder(node, fps=30):
        warm = RawHttp(gateway.url, "/cam/0")
        read_part_by_length(warm)
        warm.close()
        wait_until(lambda: gateway.slots.in_use == 0, what="the first stream closed")
        fds = process.num_fds()
        for _ in range(10):
            streams = [RawHttp(gateway.url, "/cam/0", version=v) for v in ("1.0", "1.1", "1.1")]
            for stream in streams:
                read_part_by_length(stream)
                stream.close()
            wait_until(lambda: gateway.slots.in_use == 0, what="the streams closed")
        wait_until(lambda: process.num_fds() <= fds, what=f"descriptors back to {fds}")
        assert requests.get(gateway.url + "latest/0", timeout=5).status_code == 200


def test_stopping_the_gateway_ends_streams_within_two_seconds(make_gateway, node):
    gw = make_gateway(node.endpoint)
    deliver(node, gw.cache, 0)
    conn = RawHttp(gw.url, "/cam/0", version="1.0")
    assert conn.status == 200
    started = time.monotonic()
    gw.stop()
    with pytest.raises((EOFError, ConnectionError)):
        while True:
            conn._fill()
    assert time.monotonic() - started < 2.0
    conn.close()


def test_stopping_returns_in_time_with_a_client_that_stopped_reading(make_gateway, node):
    gw = make_gateway(node.endpoint)
    deliver(node, gw.cache, 0)
    rng = np.random.default_rng(2)
    big = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with Feeder(node, fps=30, image=big):
        stuck = RawHttp(gw.url, "/cam/0", rcvbuf=16 * 1024)  # and never reads again
        wait_until(lambda: gw.cache.latest(0) is not None and gw.slots.in_use == 1)
        time.sleep(0.5)  # long enough for the stream to fill every buffer towards the client
        started = time.monotonic()
        gw.stop()
        assert time.monotonic() - started < 2.0
        assert gw.slots.in_use == 0  # the stream thread was released, not left blocked
    stuck.close()


# -- flow control: a reader of any speed gets fresh parts ---------------------------------------

# A reader's receive buffer (Linux doubles it): a quarter of a megabyte, about one 720p part.
RCVBUF = 128 * 1024


def scene(w: int, h: int, seed: int = 3) -> np.ndarray:
    """A picture with gradients and shapes: a JPEG of the size a real camera's would be."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(40, 160, w, dtype=np.uint8)[None, :, None]
    for _ in range(12):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, h // 4))
        img[max(0, y - r):y + r, max(0, x - r):x + r] = rng.integers(0, 255, 3)
    img[::7, ::5] = 255  # fine detail, so the JPEG is not trivially small
    return img


def read_slowly(conn: RawHttp, period: float, seconds: float, ages: list[float]) -> None:
    """Take one part every `period` s, like robot code doing work per frame; note each part's
    age (now − X-Timestamp, both on this host's clock) as it is read."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = read_part_by_length(conn)
        ages.append(time.time() - got.timestamp)
        time.sleep(period)


@pytest.mark.slow  # 20 s of slow reading at 720p: a scenario, run by .ci/run
def test_a_reader_taking_one_part_per_half_second_sees_fresh_parts_at_720p(make_gateway, node):
    """For 20 s, over HTTP/1.0 (plain) and HTTP/1.1 (chunked) at once, with a set receive
    buffer (an embedded client's) and with the system's (which Linux grows to two or three
    parts for a reader that drains whole parts in bursts): the parts' ages stay under 1.5 s
    instead of growing with every read (the backlog reached 6.4 s before)."""
    gateway = make_gateway(node.endpoint, max_streams=4, threads=8)
    deliver(node, gateway.cache, 0)
    with Feeder(node, fps=15, image=scene(1280, 720)):
        conns = {(v, buffer): RawHttp(gateway.url, "/cam/0", version=v, rcvbuf=buffer)
                 for v in ("1.0", "1.1") for buffer in (RCVBUF, None)}
        ages: dict[tuple, list[float]] = {key: [] for key in conns}
        readers = [threading.Thread(target=read_slowly, args=(conns[key], 0.5, 20.0, ages[key]))
                   for key in conns]
        try:
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(40)
        finally:
            for conn in conns.values():
                conn.close()
    assert conns["1.1", None].chunked and not conns["1.0", None].chunked
    for (version, buffer), seen in ages.items():
        shown = (version, buffer, [round(a, 2) for a in seen])
        assert len(seen) >= 25, shown
        assert max(seen[-10:]) < 1.5, shown
        assert max(seen[-10:]) < max(seen[10:20]) + 0.5, shown  # not growing
    skipped = FanoutRegistry.of(gateway.cache).stats.snapshot()[0]["skipped"]
    assert skipped > 200  # ~15 fps offered, ~2 fps taken, by each of four readers


def test_a_paused_reader_resumes_with_a_fresh_frame_not_a_burst_of_old_ones(gateway, node):
    with Feeder(node, fps=15, image=scene(1280, 720)):
        conn = RawHttp(gateway.url, "/cam/0", version="1.1", rcvbuf=RCVBUF)
        try:
            for _ in range(5):
                read_part_by_length(conn)
            time.sleep(2.5)  # the reader stops reading; ~37 frames are captured meanwhile
            ages = []
            for _ in range(6):
                got = read_part_by_length(conn)
                ages.append(time.time() - got.timestamp)
        finally:
            conn.close()
    # Old are only the parts that had already left the server when the pause began (in the
    # kernel's buffers, ~2 at 720p); 34 old frames arrived at once before flow control.
    assert max(ages[2:]) < 1.0, [round(a, 2) for a in ages]
    assert sum(a > 1.0 for a in ages) <= 2, [round(a, 2) for a in ages]


def test_skipped_and_delivered_parts_are_counted_per_camera(gateway, node):
    stats = FanoutRegistry.of(gateway.cache).stats
    with Feeder(node, fps=30, image=scene(640, 360)):
        fast = RawHttp(gateway.url, "/cam/0")
        slow = RawHttp(gateway.url, "/cam/0", rcvbuf=8 * 1024)
        try:
            wait_until(lambda: stats.snapshot().get(0, {}).get("clients") == 2,
                       what="two streams counted")
            for _ in range(20):
                read_part_by_length(fast)
            time.sleep(1.0)  # the slow client reads nothing
            snap = stats.snapshot()[0]
        finally:
            fast.close()
            slow.close()
    assert snap["delivered"] >= 20
    assert snap["skipped"] >= 10
    wait_until(lambda: stats.snapshot()[0]["clients"] == 0, what="both streams counted closed")


def test_a_new_stream_of_a_camera_without_frames_answers_503_at_once(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=2, threads=4)
    announce(node, gw.cache, 0)
    started = time.monotonic()
    resp = requests.get(gw.url + "cam/0", timeout=5)
    assert time.monotonic() - started < 2.0
    assert resp.status_code == 503
    assert resp.headers["content-type"].startswith("application/json")
    assert "has not delivered a frame" in resp.json()["description"]
    assert "retry-after" in resp.headers
    assert gw.slots.in_use == 0  # the refused stream gave its slot back


# -- camera outage: the node is killed and comes back -------------------------------------------

def run_node(endpoint: str, name: str, fps: float) -> None:
    """A stand-in capture node in its own process: heartbeats and 320x240 frames of camera 0."""
    with Publisher(endpoint) as pub:
        jpeg = encode_jpeg(scene(320, 240))
        seq, meta_at = 0, 0.0
        while True:
            if time.monotonic() - meta_at > 0.3:
                pub.publish(Meta(cam=0, node=name, registry={"id": 0, "resolution": [320, 240]},
                                 health={"connected": True, "fps": fps}))
                meta_at = time.monotonic()
            pub.publish(Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=320, h=240,
                              encoding="jpeg", data=jpeg, node=name))
            seq += 1
            time.sleep(1 / fps)


def test_a_stream_open_through_a_node_outage_resumes_when_the_node_returns(make_gateway,
                                                                            ipc_endpoint):
    spawn = multiprocessing.get_context("spawn")

    def start_node() -> multiprocessing.Process:
        proc = spawn.Process(target=run_node, args=(ipc_endpoint, "node-k", 20.0), daemon=True)
        proc.start()
        return proc

    gw = make_gateway(ipc_endpoint, heartbeat_timeout_s=1.0)  # the node returns there
    proc = start_node()
    try:
        wait_until(lambda: 0 in gw.cache.camera_ids() and gw.cache.latest(0) is not None,
                   timeout=15, what="the node's first frame")
        conn = RawHttp(gw.url, "/cam/0", version="1.1", timeout=10)
        for _ in range(3):
            read_part_by_length(conn)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        wait_until(lambda: not gw.cache.status()["0"]["connected"], timeout=5,
                   what="the camera seen disconnected")
        killed_at = time.time()
        proc = start_node()
        # Parts in the kernel's buffers when the node died may still arrive; then fresh ones.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = read_part_by_length(conn)
            if got.timestamp > killed_at:
                break
        else:
            raise AssertionError("no frame captured after the outage reached the open stream")
        assert time.time() - got.timestamp < 1.5
        conn.close()
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)


def test_head_of_a_stream_answers_the_headers_only(gateway, node):
    """Should HEAD be routed to a stream (as GET routes answer HEAD), no part may follow."""
    class Stream:
        def on_get(self, req, resp):
            gateway.slots.acquire()
            resp.content_type = CONTENT_TYPE
            resp.stream = MjpegStream(gateway.cache, 0, gateway.slots, gateway.stopping,
                                      connection=request_connection(req.env))

        on_head = on_get

    gateway.app.add_route("/test-head-stream", Stream())
    with Feeder(node, fps=30):
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        sock.sendall(b"HEAD /test-head-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # Waitress closes a body-less answer of unknown length
            data += chunk
        sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace" in head
    assert rest in (b"", b"0\r\n\r\n"), rest[:80]  # at most Waitress's end of an empty chunked body
    wait_until(lambda: gateway.slots.in_use == 0, what="the HEAD stream's slot released")


def test_stream_stats_count_exactly_from_many_threads():
    stats = StreamStats()

    def work(cam: int) -> None:
        for _ in range(1000):
            stats.opened(cam)
            stats.add(cam, delivered=2, skipped=1)
            stats.closed(cam)

    threads = [threading.Thread(target=work, args=(i % 2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.snapshot() == {0: {"clients": 0, "delivered": 8000, "skipped": 4000},
                                1: {"clients": 0, "delivered": 8000, "skipped": 4000}}
    snap = stats.snapshot()
    snap[0]["clients"] = 99  # a copy: the caller cannot change the counts
    assert stats.snapshot()[0]["clients"] == 0


def test_the_mjpeg_module_exports_what_the_app_builds_streams_with():
    from camfabric.gateway import mjpeg

    assert {"MjpegStream", "StreamSlots", "StreamStats", "CONTENT_TYPE"} <= set(mjpeg.__all__)
    assert all(hasattr(mjpeg, name) for name in mjpeg.__all__)
