"""A capture node seen from the fabric: real sockets on loopback, real Subscribers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from camfabric import protocol
from camfabric.capture_node.camera import Backoff
from camfabric.capture_node.config import CameraConfig, NodeConfig, demo_cameras
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.node import CaptureNode
from camfabric.capture_node.source import Capture, Source
from camfabric.protocol import topics
from tests.conftest import ANY_PORT


class UnpluggedCamera(Source):
    """An outside camera that is not there: every open fails, and each attempt is timed."""

    kind = "unplugged"

    def __init__(self) -> None:
        self.open_times: list[float] = []

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        raise SourceError("/dev/video9: no such device")

    def read(self, timeout: float) -> Capture:
        raise SourceError("not open")

    def close(self) -> None:
        pass


class DyingCamera(Source):
    """An outside camera that delivers `frames_per_life` frames, then dies mid-read."""

    kind = "dying"

    def __init__(self, frames_per_life: int = 3, fps: float = 50.0) -> None:
        self.frames_per_life = frames_per_life
        self.period = 1.0 / fps
        self.opens = 0
        self._left = 0
        self._wake = threading.Event()

    def open(self) -> None:
        self.opens += 1
        self._left = self.frames_per_life

    def read(self, timeout: float) -> Capture:
        if self._wake.wait(self.period):
            raise SourceError("interrupted")
        if self._left == 0:
            raise SourceError("stream ended")
        self._left -= 1
        image = np.full((48, 64, 3), 10 * self.opens, dtype=np.uint8)
        return Capture(time.time_ns(), 64, 48, image=image)

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        self._wake.set()


class StuckCamera(Source):
    """An outside camera whose read blocks until interrupted (a hung USB device)."""

    kind = "stuck"

    def __init__(self) -> None:
        self._wake = threading.Event()

    def open(self) -> None:
        pass

    def read(self, timeout: float) -> Capture:
        self._wake.wait(timeout)
        raise SourceError("no frame")

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        self._wake.set()


def camera(cam: int, fps: float = 20, size=(160, 120), **kw) -> CameraConfig:
    return CameraConfig(id=cam, name=f"cam {cam}", resolution=size, fps=fps, **kw)


@pytest.fixture
def make_node(zmq_context):
    nodes = []

    def make(*cameras: CameraConfig, **kw) -> CaptureNode:
        node_kw = {k: kw.pop(k) for k in ("sources", "backoff") if k in kw}
        config = NodeConfig(name="testnode", publish=ANY_PORT, cameras=cameras, **kw)
        node = CaptureNode(config, zmq_context, **node_kw).start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def subscriber(node, zmq_context, cameras=(0,), encoding="jpeg", **kw) -> protocol.Subscriber:
    return protocol.Subscriber(node.endpoint, cameras=cameras, encoding=encoding,
                               context=zmq_context, **kw)


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        tick.wait(interval)
    return predicate()


def test_jpeg_frames_decode_and_seq_increases(make_node, zmq_context):
    node = make_node(camera(0, fps=30, size=(320, 240)))
    with subscriber(node, zmq_context) as sub:
        first = sub.latest(0, timeout=2.0)
        later = [sub.latest(0, timeout=1.0, newer_than=first)]
        later.append(sub.latest(0, timeout=1.0, newer_than=later[0]))
    assert protocol.is_complete_jpeg(first.data)
    assert first.image.shape == (240, 320, 3)
    assert (first.w, first.h, first.node, first.frame_id) == (320, 240, "testnode", "cam0")
    assert first.seq < later[0].seq < later[1].seq
    assert not np.array_equal(first.image, later[1].image)  # the scene moves


def test_bgr8_frames_have_the_shape_and_plausible_times(make_node, zmq_context):
    node = make_node(camera(0, fps=30, size=(320, 240)))
    with subscriber(node, zmq_context, encoding="bgr8") as sub:
        frames = [sub.latest(0, timeout=2.0)]
        for _ in range(3):
            frames.append(sub.latest(0, timeout=1.0, newer_than=frames[-1]))
    now = time.time_ns()
    for frame in frames:
        assert frame.encoding == "bgr8" and frame.image.shape == (240, 320, 3)
        assert frame.step == 320 * 3 and len(frame.data) == 240 * frame.step
        assert now - 3_000_000_000 < frame.t_capture_ns <= frame.t_publish_ns <= now
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))


def test_jpeg_and_raw_of_one_capture_share_seq(make_node, zmq_context):
    node = make_node(camera(0, fps=30))
    with subscriber(node, zmq_context, encoding=("jpeg", "bgr8")) as sub:
        raw = sub.latest(0, timeout=2.0, encoding="bgr8")
        assert wait_until(lambda: sub.latest(0, 1.0).seq >= raw.seq)
        by_seq = {}

        def keep(msg):
            if isinstance(msg, protocol.Frame):
                by_seq.setdefault(msg.seq, {})[msg.encoding] = msg

        sub.add_listener(keep)
        assert wait_until(lambda: any(len(v) == 2 for v in by_seq.values()))
    pair = next(v for v in by_seq.values() if len(v) == 2)
    assert pair["jpeg"].t_capture_ns == pair["bgr8"].t_capture_ns
    diff = np.abs(pair["jpeg"].image.astype(int) - pair["bgr8"].image.astype(int))
    assert diff.mean() < 8  # the same picture, up to JPEG loss


def test_nothing_is_encoded_or_converted_while_nobody_asks(make_node, zmq_context):
    node = make_node(camera(0, fps=30))
    loop = node.loops[0]
    assert wait_until(lambda: loop.counters["frames"] >= 10)
    counts = loop.counters.snapshot()
    assert counts["encodes"] == 0 and counts["conversions"] == 0
    assert counts["published"] == {"jpeg": 0, "bgr8": 0, "gray8": 0, "h264": 0}
    assert counts["h264_encodes"] == 0

    with subscriber(node, zmq_context, encoding="bgr8") as sub:  # raw only: still no JPEG
        sub.latest(0, timeout=2.0)
        frames = loop.counters["frames"]
        assert wait_until(lambda: loop.counters["frames"] >= frames + 10)
        counts = loop.counters.snapshot()
        assert counts["encodes"] == 0 and counts["published"]["jpeg"] == 0
        assert counts["published"]["bgr8"] >= 10

    assert wait_until(lambda: not node.publisher.subscriptions)
    with subscriber(node, zmq_context, encoding="jpeg") as sub:  # JPEG only: no raw
        sub.latest(0, timeout=2.0)
        raw_before = loop.counters.snapshot()["published"]["bgr8"]
        frames = loop.counters["frames"]
        assert wait_until(lambda: loop.counters["frames"] >= frames + 10)
        counts = loop.counters.snapshot()
        assert counts["published"]["bgr8"] == raw_before and counts["published"]["gray8"] == 0
        # Every encode is published: at most the one in hand as the counters are read is not yet.
        assert counts["encodes"] >= 10
        assert 0 <= counts["encodes"] - counts["published"]["jpeg"] <= 1


def test_gray8_is_produced_when_asked(make_node, zmq_context):
    node = make_node(camera(0, fps=30, size=(160, 120)))
    with subscriber(node, zmq_context, encoding="gray8") as sub:
        frame = sub.latest(0, timeout=2.0)
    assert frame.image.shape == (120, 160) and frame.step == 160
    assert node.loops[0].counters["conversions"] >= 1


@pytest.mark.parametrize("encoding", ["jpeg", "bgr8"])
def test_a_late_joiner_gets_the_latest_capture_at_once(make_node, zmq_context, encoding):
    node = make_node(camera(0, fps=1))
    loop = node.loops[0]
    assert wait_until(lambda: loop.counters["frames"] >= 1)
    seq = loop.health()["seq"]
    with subscriber(node, zmq_context, encoding=encoding) as sub:
        asked = time.monotonic()
        frame = sub.latest(0, timeout=0.5)
        waited = time.monotonic() - asked
    assert waited < 0.5
    assert frame.seq == seq  # the capture already made, not the next one a second later
    assert frame.encoding == encoding and frame.image.shape == (120, 160, 3)


def test_the_heartbeat_carries_registry_and_health(make_node, zmq_context):
    cams = demo_cameras(160, 120, 10)
    node = make_node(*cams)
    beats: list[protocol.Meta] = []
    with protocol.Subscriber(node.endpoint, cameras=None, context=zmq_context,
                             topics_extra=(b"scan/",)) as sub:
        sub.add_listener(lambda m: beats.append(m) if isinstance(m, protocol.Meta) else None)
        assert wait_until(lambda: len({m.t_publish_ns for m in beats if m.cam == 0}) >= 3, 3.5)
        scan = sub.message(topics.scan("testnode"))
    cam0 = sorted({m.t_publish_ns: m for m in beats if m.cam == 0}.items())
    gaps = [(b[0] - a[0]) / 1e9 for a, b in zip(cam0, cam0[1:], strict=False)]
    assert all(0.8 < gap < 1.3 for gap in gaps), gaps
    meta = cam0[-1][1]
    assert meta.registry == {
        "id": 0, "device": "/dev/video0", "name": "Overhead", "role": "overhead", "mount": "fixed",
        "resolution": [160, 120], "fov_deg": 78, "description": cams[0].description,
    }
    health = meta.health
    assert health["connected"] is True and health["node"] == "testnode"
    assert 7 <= health["fps"] <= 13 and health["frames"] >= 10 and health["errors"] == 0
    assert (health["width"], health["height"], health["source"]) == (160, 120, "synthetic")
    assert {m.cam for m in beats} == {0, 1, 2}
    assert scan is not None and scan.report["devices"] == []
    assert set(scan.report["cameras"]) == {"0", "1", "2"}
    probe = scan.report["cameras"]["1"]
    assert probe["opened"] is True and probe["first_frame_ms"] < 2000 and probe["error"] == ""
    assert probe["resolutions"] == [[160, 120]]


def test_a_failing_camera_is_retried_while_another_keeps_its_fps(make_node, zmq_context):
    unplugged = UnpluggedCamera()
    node = make_node(camera(0, fps=20), camera(1, fps=20), sources={1: unplugged},
                     backoff=Backoff(0.05, 0.4, jitter=0.0), heartbeat_s=0.2)
    with subscriber(node, zmq_context, cameras=(0, 1)) as sub:
        first = sub.latest(0, timeout=2.0)
        assert wait_until(lambda: len(unplugged.open_times) >= 5, 3.0)
        last = sub.latest(0, timeout=1.0, newer_than=first)
        assert wait_until(lambda: (sub.meta(1) or 0) and sub.meta(1).health["retries"] >= 3)
        meta1, meta0 = sub.meta(1), sub.meta(0)
    # probe + opens: waits of 0.05, 0.1, 0.2, 0.4, 0.4 between attempts, never faster
    gaps = np.diff(unplugged.open_times[1:])
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.19
    assert all(gap < 0.7 for gap in gaps)
    health = meta1.health
    assert health["connected"] is False and health["state"] == "retrying"
    assert "no such device" in health["last_error"] and health["errors"] >= 3
    assert health["source"] == "unplugged" and health["fps"] == 0
    elapsed = (last.t_capture_ns - first.t_capture_ns) / 1e9
    assert (last.seq - first.seq) / elapsed > 15  # camera 0 kept (close to) its 20 fps
    assert meta0.health["connected"] is True and meta0.health["fps"] > 15
    assert meta1.registry["device"] == "unplugged"


def test_a_camera_dying_mid_read_comes_back(make_node, zmq_context):
    dying = DyingCamera(frames_per_life=3)
    node = make_node(camera(0, fps=50), sources={0: dying}, backoff=Backoff(0.02, 0.1))
    with subscriber(node, zmq_context, encoding="bgr8") as sub:
        assert wait_until(lambda: dying.opens >= 4)  # the probe, then three lives
        frame = sub.latest(0, timeout=2.0)
        later = sub.latest(0, timeout=2.0, newer_than=frame)
    health = node.health(0)
    assert later.seq > frame.seq
    assert health["errors"] >= 2 and "stream ended" in health["last_error"]
    assert health["frames"] >= 6  # frames from more than one life of the source


@pytest.mark.parametrize("rotation, flip, expect", [
    (90, "none", lambda img: np.rot90(img, k=-1)),
    (270, "none", lambda img: np.rot90(img, k=1)),
    (180, "none", lambda img: img[::-1, ::-1]),
    (0, "horizontal", lambda img: img[:, ::-1]),
    (0, "vertical", lambda img: img[::-1, :]),
    (90, "horizontal", lambda img: np.rot90(img, k=-1)[:, ::-1]),
    (180, "both", lambda img: img),
])
def test_rotation_and_flip_on_pixels(make_node, zmq_context, rotation, flip, expect):
    picture = FixedPicture()
    node = make_node(camera(0, fps=20, size=(64, 48), rotation=rotation, flip=flip),
                     sources={0: picture})
    with subscriber(node, zmq_context, encoding=("bgr8", "jpeg")) as sub:
        raw = sub.latest(0, timeout=2.0, encoding="bgr8")
        jpeg = sub.latest(0, timeout=2.0, encoding="jpeg")
    want = expect(picture.image)
    assert (raw.w, raw.h) == (want.shape[1], want.shape[0])
    assert np.array_equal(raw.image, want)
    assert jpeg.image.shape == want.shape
    assert np.abs(jpeg.image.astype(int) - want.astype(int)).mean() < 10
    assert node.health(0)["width"] == want.shape[1]


class FixedPicture(Source):
    """An outside camera that shows one asymmetric picture: four coloured quadrants and a mark."""

    kind = "fixed"

    def __init__(self, as_jpeg: bool = False) -> None:
        image = np.zeros((48, 64, 3), dtype=np.uint8)
        image[:24, :32] = (255, 0, 0)
        image[:24, 32:] = (0, 255, 0)
        image[24:, :32] = (0, 0, 255)
        image[24:, 32:] = (255, 255, 255)
        image[2:6, 2:10] = (0, 0, 0)
        self.image = image
        self.jpeg = protocol.encode_jpeg(image, 95) if as_jpeg else None
        self._wake = threading.Event()

    def open(self) -> None:
        pass

    def read(self, timeout: float) -> Capture:
        if self._wake.wait(0.05):
            raise SourceError("interrupted")
        if self.jpeg is not None:
            return Capture(time.time_ns(), 64, 48, jpeg=self.jpeg)
        return Capture(time.time_ns(), 64, 48, image=self.image.copy())

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        self._wake.set()


def test_a_source_jpeg_passes_through_untouched(make_node, zmq_context):
    picture = FixedPicture(as_jpeg=True)
    node = make_node(camera(0, fps=20, size=(64, 48)), sources={0: picture})
    with subscriber(node, zmq_context) as sub:
        frame = sub.latest(0, timeout=2.0)
        frame = sub.latest(0, timeout=2.0, newer_than=frame)
    assert bytes(frame.data) == picture.jpeg
    counts = node.loops[0].counters.snapshot()
    assert counts["encodes"] == 0 and counts["decodes"] == 0 and counts["passthrough"] >= 2


def test_a_source_jpeg_is_decoded_only_for_raw_and_transformed_once(make_node, zmq_context):
    picture = FixedPicture(as_jpeg=True)
    node = make_node(camera(0, fps=20, size=(64, 48), rotation=90), sources={0: picture})
    with subscriber(node, zmq_context, encoding=("jpeg", "bgr8")) as sub:
        jpeg = sub.latest(0, timeout=2.0)
        raw = sub.latest(0, timeout=2.0, encoding="bgr8")
    assert (jpeg.w, jpeg.h) == (48, 64) and jpeg.image.shape == (64, 48, 3)
    want = np.rot90(picture.image, k=-1)
    assert np.abs(raw.image.astype(int) - want.astype(int)).mean() < 10
    counts = node.loops[0].counters.snapshot()
    # one decode and one encode per capture, however many encodings went out
    assert counts["decodes"] <= counts["frames"] and counts["encodes"] <= counts["frames"]
    assert counts["passthrough"] == 0


def test_stop_is_quick_even_with_a_source_stuck_in_read(zmq_context):
    cams = (camera(0, fps=1), camera(1, fps=30), camera(2, fps=5))
    config = NodeConfig(name="testnode", publish=ANY_PORT, cameras=cams)
    node = CaptureNode(config, zmq_context, sources={2: StuckCamera()}).start()
    with subscriber(node, zmq_context, cameras=(0, 1), encoding=("jpeg", "bgr8")) as sub:
        sub.latest(1, timeout=2.0)
        started = time.monotonic()
        node.stop()
        took = time.monotonic() - started
    assert took < 2.0
    assert all(not t.is_alive() for t in node._threads)
    assert all(loop.join(0) for loop in node.loops.values())
    assert node.health(0)["state"] == "stopped"


def test_insecure_warns_at_every_start(zmq_context, caplog):
    for _ in range(2):  # a fresh port each time: libzmq releases a closed one asynchronously
        config = NodeConfig(name="testnode", publish=ANY_PORT,
                            insecure=True, cameras=(camera(0),))
        with CaptureNode(config, zmq_context):
            pass
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "insecure" in r.message]
    assert len(warnings) == 2


def test_a_taken_endpoint_is_a_clear_error(make_node, zmq_context):
    first = make_node(camera(0))
    config = NodeConfig(name="second", publish=first.endpoint, cameras=(camera(0),))
    with pytest.raises(protocol.CamfabricError, match="cannot publish on"):
        CaptureNode(config, zmq_context).start()


class GrayCamera(FixedPicture):
    """An outside monochrome camera: it delivers (h, w) pictures."""

    def read(self, timeout: float) -> Capture:
        capture = super().read(timeout)
        return Capture(capture.t_capture_ns, 64, 48, image=capture.image[..., 2].copy())


def test_a_gray_source_serves_gray8_as_is_and_bgr8_converted(make_node, zmq_context):
    node = make_node(camera(0, fps=20, size=(64, 48)), sources={0: GrayCamera()})
    with subscriber(node, zmq_context, encoding=("gray8", "bgr8", "jpeg")) as sub:
        gray = sub.latest(0, timeout=2.0, encoding="gray8")
        bgr = sub.latest(0, timeout=2.0, encoding="bgr8")
        jpeg = sub.latest(0, timeout=2.0, encoding="jpeg")
    assert gray.image.shape == (48, 64) and gray.image[0, 40] == 0 and gray.image[40, 0] == 255
    assert bgr.image.shape == (48, 64, 3) and (bgr.image[40, 0] == 255).all()
    assert jpeg.image.shape == (48, 64, 3)


class GlitchyCamera(FixedPicture):
    """An outside MJPEG camera that sends a cut-off JPEG every other frame."""

    def __init__(self) -> None:
        super().__init__(as_jpeg=True)
        self.reads = 0

    def read(self, timeout: float) -> Capture:
        capture = super().read(timeout)
        self.reads += 1
        data = capture.jpeg if self.reads % 2 else capture.jpeg[: len(capture.jpeg) // 2]
        return Capture(capture.t_capture_ns, 64, 48, jpeg=data)


def test_broken_captures_are_counted_and_logged_once(make_node, zmq_context, caplog):
    node = make_node(camera(0, fps=20, size=(64, 48)), sources={0: GlitchyCamera()})
    with subscriber(node, zmq_context, encoding=("jpeg", "bgr8")) as sub:
        frames = []
        sub.add_listener(lambda m: frames.append(m) if isinstance(m, protocol.Frame) else None)
        assert wait_until(lambda: node.loops[0].counters["frames"] >= 10)
    counts = node.loops[0].counters.snapshot()
    assert counts["publish_failed"] >= 8  # both encodings of every broken capture
    assert frames and all(protocol.is_complete_jpeg(f.data) for f in frames if f.encoding == "jpeg")
    raws = [f for f in frames if f.encoding == "bgr8"]
    assert raws and all((f.image[44, 60] > 230).all() for f in raws)  # never a half-decoded one
    assert node.health(0)["connected"] is True
    warnings = [r for r in caplog.records if "could not publish" in r.message]
    assert len(warnings) == 2  # one per kind of failure (jpeg, bgr8), not one per frame


# -- honest ages for late joiners -------------------------------------------------------------

def true_age_ms(frame: protocol.Frame) -> float:
    """The frame's age on this (the node's own) host: its wall clock minus the capture stamp."""
    return (time.time_ns() - frame.t_capture_ns) / 1e6


def test_a_late_joiner_long_after_the_last_one_left_gets_its_true_age(make_node, zmq_context):
    node = make_node(camera(0, fps=10))
    with subscriber(node, zmq_context, encoding="bgr8") as first:
        first.latest(0, timeout=2.0)
    # The last bgr8 frame sits in the node's cache, 2 s old by then: several times the longest a
    # cached frame may be replayed (a few frame intervals, 0.4 s at 10 fps).
    time.sleep(2.0)
    with subscriber(node, zmq_context, encoding="bgr8") as late:
        got = late.latest(0, timeout=2.0)
        reported, truth = got.age_ns() / 1e6, true_age_ms(got)
    assert abs(reported - truth) < 150, (reported, truth)
    assert truth < 1000  # and it is a fresh capture, not the one from 2 s ago


def test_a_late_joiner_after_the_camera_died_gets_no_stale_frame(make_node, zmq_context):
    dying = DyingCamera(frames_per_life=5, fps=20)
    node = make_node(camera(0, fps=20), sources={0: dying}, backoff=Backoff(60.0, 60.0))
    with subscriber(node, zmq_context, encoding="bgr8") as first:
        first.latest(0, timeout=2.0)  # the node's cache now holds a bgr8 frame
        assert wait_until(lambda: not node.loops[0].connected, timeout=5.0)
    time.sleep(0.5)  # more than a few frame intervals
    for encoding in ("bgr8", "jpeg"):
        with subscriber(node, zmq_context, encoding=encoding) as late, \
                pytest.raises(protocol.FrameTimeout, match="disconnected"):
            late.latest(0, timeout=1.0)
    assert node.replays_skipped >= 1
