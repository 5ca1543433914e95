"""MJPEG and the server under load, against a real Waitress gateway on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from camfabric.protocol import Frame, decode_jpeg, encode_jpeg

from .support import (
    FakeNode,
    RawHttp,
    announce,
    read_part_by_length,
    read_part_by_markers,
    wait_until,
)


class Feeder:
    """Publishes frames of one camera at a steady rate on a background thread."""

    def __init__(self, node: FakeNode, cam: int = 0, fps: float = 50.0, image: np.ndarray | None = None):
        self.node, self.cam, self.period = node, cam, 1.0 / fps
        self.jpeg = encode_jpeg(image) if image is not None else None
        self.shape = image.shape if image is not None else None
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.jpeg is None:
                self.node.frame(self.cam, (self.published * 9) % 256)
            else:
                h, w = self.shape[:2]
                seq = self.node.seq[self.cam] = self.node.seq.get(self.cam, -1) + 1
                self.node.publisher.publish(Frame(cam=self.cam, seq=seq, t_capture_ns=time.time_ns(),
                                                  w=w, h=h, encoding="jpeg", data=self.jpeg,
                                                  node=self.node.name))
            if self.published % 10 == 0:
                self.node.meta(self.cam)
            self.published += 1

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=3, threads=6, snap_timeout_s=1.0)
    announce(node, gw.cache, 0)
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
    streams = [RawHttp(gateway.url, "/cam/0") for _ in range(3)]
    assert [s.status for s in streams] == [200, 200, 200]
    assert requests.get(gateway.url + "cam/0", timeout=5).status_code == 503
    streams[0].close()  # the camera sends nothing: the slot is freed by noticing the hang-up
    wait_until(lambda: gateway.slots.in_use == 2, timeout=3.0, what="the stream slot freed")
    fresh = RawHttp(gateway.url, "/cam/0")
    assert fresh.status == 200
    for s in [*streams[1:], fresh]:
        s.close()


def test_stopping_the_gateway_ends_streams_within_two_seconds(make_gateway, node):
    gw = make_gateway(node.endpoint)
    announce(node, gw.cache, 0)
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
    announce(node, gw.cache, 0)
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
