"""The tracker's promises as the Gemini service sees them: real frames over ZeroMQ, real
trackers (in this process and as a `camfabric tracker` process), the strict fake Gemini on
loopback keeping its own clock and its own per-project limits. Every gap below is measured at
the fake, when the request arrived."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from camfabric.protocol import Frame, Meta, Publisher, Subscriber, encode_jpeg, topics
from camfabric.subscribers.tracker.budget import SEND_SLACK_S
from camfabric.subscribers.tracker.config import CameraTracking, GeminiConfig, TrackerConfig
from camfabric.subscribers.tracker.service import Tracker
from tests.conftest import ANY_PORT, ENDPOINT, PYTHON, REPO, Output
from tests.fakes.gemini import FakeGemini

KEY = "AIzaSyD-pacing-test-key-0123456789abcde"
# The gate is taken when a request leaves the tracker; the fake sees it arrive, after a
# connection set-up or a thread switch that can delay one request more than the next. The
# tracker waits SEND_SLACK_S longer than each interval for exactly that (docs/tracker.md), so
# the gaps below are held to the contract itself, as the server counts them: a gap under 2 s
# at the fake is a broken promise, not jitter. The exact spacing at the gate is checked on a
# manual clock in test_budget.py.
# Each camera's frames differ, so the fake's records tell which camera a request was for.
JPEGS = {cam: encode_jpeg(np.full((360, 640, 3), 40 + 50 * cam, np.uint8)) for cam in range(3)}


@contextmanager
def frames(endpoint: str, cams: list[int], context, fps: float = 10.0) -> Iterator[Publisher]:
    """A node stand-in: JPEG frames of `cams` at `fps`, with heartbeats, until the block ends."""
    stop = threading.Event()
    with Publisher(endpoint, context=context) as pub:
        def run() -> None:
            seq = 0
            while not stop.wait(1 / fps):
                for cam in cams:
                    pub.publish(Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=640, h=360,
                                      encoding="jpeg", data=JPEGS[cam], node="n"))
                    if seq % 10 == 0:
                        pub.publish(Meta(cam=cam, node="n", registry={"id": cam, "role": "end_effector"},
                                         health={}))
                seq += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield pub
        finally:
            stop.set()
            thread.join(2)


def _config(node: str, fake: FakeGemini, cams: list[int], state_dir, **gemini) -> TrackerConfig:
    cameras = tuple(CameraTracking(id=c, role="end_effector", detector="gemini", interval_s=2.0)
                    for c in cams)
    return TrackerConfig(nodes=[node], publish=ANY_PORT, cameras=cameras,
                         gemini=GeminiConfig(base_url=fake.url, state_dir=state_dir, **gemini))


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _per_camera(fake: FakeGemini) -> dict[int, list[float]]:
    """Arrival times at the fake of each camera's requests, told apart by their image."""
    by_image = {base64.b64encode(jpeg).decode(): cam for cam, jpeg in JPEGS.items()}
    out: dict[int, list[float]] = {}
    for r in fake.requests:
        data = r.body["contents"][0]["parts"][0]["inline_data"]["data"]
        out.setdefault(by_image[data], []).append(r.at)
    return out


@pytest.mark.slow
def test_three_gemini_cameras_for_60_s_at_the_fake(tmp_path, zmq_context, caplog):
    """60 s, three cameras wanting a frame every 2 s against 30 requests a minute: the calls
    leave evenly spaced, a 429's retryDelay silences every camera, the fake's own per-minute
    limit is never hit, and no camera's requests are ever closer than 2 s."""
    with FakeGemini(api_key=KEY, objects=[{"label": "cup", "box_2d": [400, 400, 600, 600]}],
                    retry_delay="5s", per_minute=30) as fake, \
            frames(ANY_PORT, [0, 1, 2], zmq_context) as node:
        fake.script = ["ok"] * 9 + ["429"]
        config = _config(node.endpoint, fake, [0, 1, 2], tmp_path, requests_per_minute=30,
                         requests_per_day=100_000)
        with caplog.at_level(logging.WARNING), \
                Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as tracker:
            time.sleep(60)
            status = tracker.status()
    assert "interval_s >= 6" in caplog.text  # the demand (90/min) was said not to fit 30/min
    arrivals = [r.at for r in fake.requests]
    assert all(r.problems == [] for r in fake.requests)
    rate_limited = [r.at for r in fake.requests if r.status == 429]
    assert len(rate_limited) == 1 and fake.requests[9].status == 429  # only the scripted one
    (limited,) = rate_limited
    after = [t for t in arrivals if t > limited]
    assert after and after[0] - limited >= 5.0  # every camera silent for the retryDelay
    per_cam = _per_camera(fake)
    for cam, times in per_cam.items():  # the seed's rule, at the API
        assert min(_gaps(times)) >= 2.0, (cam, times)
    # the budget's calls are evenly spaced: one every 60/30 s (+ the send margin), never a burst
    paused = arrivals.index(limited)
    gaps = [g for i, g in enumerate(_gaps(arrivals)) if i != paused]  # all but the pause's gap
    assert min(gaps) >= 60 / 30  # never closer than the per-minute quota allows, at the server
    assert max(gaps) <= 2.0 + SEND_SLACK_S + 2.0  # and never a silence then a burst (loaded machine)
    assert sum(gaps) / len(gaps) <= 2.0 + SEND_SLACK_S + 0.5
    assert 20 <= len(arrivals) <= 30
    # the cameras take turns: the token goes to the camera that waited longest
    counts = sorted(len(t) for t in per_cam.values())
    assert len(counts) == 3 and counts[-1] - counts[0] <= 1
    assert [status["cameras"][c]["calls"] for c in ("0", "1", "2")] == [len(per_cam[c]) for c in (0, 1, 2)]
    assert status["gemini"]["rate_limited"] == 1


def test_one_camera_at_the_fake_never_closer_than_2_s_and_never_two_in_flight(tmp_path, zmq_context):
    with FakeGemini(api_key=KEY, objects=[], slow_s=2.6) as fake, \
            frames(ANY_PORT, [1], zmq_context, fps=50) as node:
        fake.script = ["ok", "slow", "ok", "ok", "ok"]
        config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                         requests_per_day=100_000)
        with Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and fake.calls < 5:
                time.sleep(0.1)
    arrivals = [r.at for r in fake.requests]
    assert len(arrivals) >= 5 and fake.max_in_flight == 1
    gaps = _gaps(arrivals)
    assert min(gaps) >= 2.0
    assert gaps[1] >= 2.6  # the slow answer held the next request back until it came


def test_a_request_slowed_on_its_way_by_a_new_connection_still_leaves_2_s_at_the_server(tmp_path,
                                                                                       zmq_context):
    """The first request opens the connection and reaches the server 150 ms after it left (a
    TLS set-up over the internet takes about that); the next one, on the kept-alive connection,
    arrives at once. The gap the paid API sees is still at least the camera's 2 s."""
    with FakeGemini(api_key=KEY, objects=[], connect_s=0.15) as fake, \
            frames(ANY_PORT, [1], zmq_context, fps=50) as node:
        config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                         requests_per_day=100_000)
        with Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}):
            assert fake.wait_calls(3, timeout=15)
    gaps = _gaps([r.at for r in fake.requests])
    assert min(gaps) >= 2.0, gaps


class SteppedClock:
    """This host's real monotonic clock, and a wall clock NTP can step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time() + self.offset

    def wall_ns(self) -> int:
        return int(self.wall() * 1e9)


def test_wall_clock_stepped_an_hour_either_way_neither_bursts_nor_stalls(tmp_path, zmq_context):
    clock = SteppedClock()
    with FakeGemini(api_key=KEY, objects=[], retry_delay="3s") as fake, \
            frames(ANY_PORT, [1], zmq_context) as node:
        fake.script = ["ok", "ok", "429"]
        config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                         requests_per_day=100_000)
        with Tracker(config, context=zmq_context, clock=clock, environ={"GEMINI_API_KEY": KEY}):
            assert fake.wait_calls(3, timeout=20)
            clock.offset -= 3600  # right after the 429: back an hour
            assert fake.wait_calls(4, timeout=10)  # the pause ends after its 3 s, not an hour
            clock.offset += 7200  # then forward an hour, within the next 2 s interval
            assert fake.wait_calls(5, timeout=10)
    arrivals = [r.at for r in fake.requests]
    gaps = _gaps(arrivals)
    assert fake.requests[2].status == 429 and len(arrivals) >= 5
    assert min(gaps) >= 2.0  # no burst
    # The pause lasted its 3 s, not an hour; every other request came about 2 s after the one
    # before, not an hour later (the margins are for a loaded machine; the exact spacing is
    # checked on a manual clock in test_budget.py).
    assert 3.0 <= gaps[2] <= 3.0 + 5.0
    assert max(gaps) <= 2.0 + SEND_SLACK_S + 5.0


def _tracker_process(tmp_path, node: str, url: str, per_minute: int) -> subprocess.Popen:
    """`camfabric tracker` watching camera 1 with Gemini, its state in `tmp_path`, publishing the
    world on a port of its choosing (it logs which: `world on tcp://…`)."""
    config_file = tmp_path / f"tracker-{per_minute}.toml"
    config_file.write_text(textwrap.dedent(f"""
        [tracker]
        nodes = ["{node}"]
        publish = "{ANY_PORT}"
        cameras = [{{ id = 1, role = "end_effector", detector = "gemini", interval_s = 2.0 }}]
        gemini = {{ base_url = "{url}", requests_per_minute = {per_minute}, requests_per_day = 100000, \
state_dir = "{tmp_path}" }}
    """))
    env = {"GEMINI_API_KEY": KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([PYTHON, "-m", "camfabric.cli", "tracker", "--config", str(config_file)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_tracker_with_another_budget_for_the_key_refuses_to_start(tmp_path, zmq_context):
    with FakeGemini(api_key=KEY, objects=[]) as fake, frames(ANY_PORT, [1], zmq_context) as node:
        config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                         requests_per_day=100_000)
        with Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}):
            proc = _tracker_process(tmp_path, node.endpoint, fake.url, per_minute=10)
            try:
                _, err = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert proc.returncode == 1, err
    assert f"another tracker (pid {os.getpid()})" in err and "requests_per_minute=1000" in err
    assert KEY not in err


def test_two_trackers_on_one_host_share_one_camera_s_2_s(tmp_path, zmq_context):
    """A `camfabric tracker` process and a tracker in this process, same key, same camera:
    together they never send that camera's frames closer than 2 s apart."""
    with FakeGemini(api_key=KEY, objects=[]) as fake, frames(ANY_PORT, [1], zmq_context) as node:
        proc = _tracker_process(tmp_path, node.endpoint, fake.url, per_minute=1000)
        output = Output(proc.stderr)
        try:
            world = output.wait_for(f"world on ({ENDPOINT})").group(1)
            config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                             requests_per_day=100_000)
            with Subscriber(world, cameras=[], topics_extra=[topics.status("tracker")],
                            context=zmq_context) as sub:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and sub.message(topics.status("tracker")) is None:
                    time.sleep(0.1)  # the other process is up
                with Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as tracker:
                    assert fake.wait_calls(fake.calls + 3, timeout=20)  # two trackers, three turns
                    ours = tracker.status()["cameras"]["1"]
                    (state_file,) = tmp_path.glob("gemini-*.json")
                    owners = json.loads(state_file.read_text())["owners"]
                theirs = sub.message(topics.status("tracker")).state["cameras"]["1"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            err = output.text()
    arrivals = [r.at for r in fake.requests]
    assert min(_gaps(arrivals)) >= 2.0, err
    assert sorted(owners) == sorted([str(os.getpid()), str(proc.pid)])  # one state, two trackers
    assert ours["calls"] + theirs["calls"] >= 3 and len(arrivals) >= 3
    assert KEY not in err


def test_a_restart_keeps_a_per_day_pause(tmp_path, zmq_context):
    with FakeGemini(api_key=KEY, objects=[]) as fake, frames(ANY_PORT, [1], zmq_context) as node:
        fake.script = ["daily"]
        config = _config(node.endpoint, fake, [1], tmp_path)
        with Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as tracker:
            assert fake.wait_calls(1, timeout=10)
            time.sleep(0.5)  # the answer reaches the tracker
            assert tracker.status()["gemini"]["pause_reason"] == "daily quota exhausted"
        restarted = dataclasses.replace(config, publish=ANY_PORT)
        with Tracker(restarted, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as again:
            # Frames keep coming: a forgetful tracker would call at once, as the first one did.
            assert not fake.wait_calls(2, timeout=3.0)
            status = again.status()
    assert fake.calls == 1
    assert status["gemini"]["pause_reason"] == "daily quota exhausted"
    assert status["gemini"]["paused_until"] > time.time() + 60
    assert status["gemini"]["used_today"] == config.gemini.requests_per_day  # the day is spent


def test_a_gemini_interval_under_2_s_is_a_config_error_naming_the_key():
    from camfabric.protocol.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrackerConfig(cameras=(CameraTracking(id=1, role="end_effector", detector="gemini",
                                              interval_s=0.05),))
    assert err.value.path == "cameras[0].interval_s" and "2 s" in str(err.value)


def _wait_status(sub: Subscriber, predicate, timeout: float = 10.0):
    """The first tracker status on `sub` that satisfies `predicate`, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.message(topics.status("tracker"))
        if msg is not None and predicate(msg.state):
            return msg.state
        time.sleep(0.05)
    return None


def test_gemini_s_last_error_reaches_status_scrubbed_and_a_retired_model_stops_calling(
        tmp_path, zmq_context, caplog):
    with FakeGemini(api_key=KEY, objects=[]) as fake, frames(ANY_PORT, [1], zmq_context) as node:
        fake.script = ["echo"]  # a 500 whose message quotes the key
        config = _config(node.endpoint, fake, [1], tmp_path, requests_per_minute=1000,
                         requests_per_day=100_000, backoff_s=0.5, max_backoff_s=1.0)
        with caplog.at_level(logging.DEBUG), \
                Tracker(config, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as tracker, \
                Subscriber(tracker.endpoint, cameras=[], topics_extra=[topics.status("tracker")],
                           context=zmq_context) as sub:
            echoed = _wait_status(sub, lambda state: "HTTP 500" in state["gemini"]["last_error"])
        old_model = dataclasses.replace(config.gemini, model="gemini-2.5-flash")
        retired = dataclasses.replace(config, gemini=old_model, publish=ANY_PORT)
        with Tracker(retired, context=zmq_context, environ={"GEMINI_API_KEY": KEY}) as tracker, \
                Subscriber(tracker.endpoint, cameras=[], topics_extra=[topics.status("tracker")],
                           context=zmq_context) as sub:
            stopped = _wait_status(sub, lambda state: state["cameras"]["1"]["stopped"])
            calls = fake.calls
            time.sleep(2.5)  # past its interval: a stopped camera does not call again
            assert fake.calls == calls
    assert echoed is not None and "[key]" in echoed["gemini"]["last_error"]
    assert stopped is not None and "tracker.gemini.model" in stopped["gemini"]["last_error"]
    assert "tracker.gemini.model" in stopped["cameras"]["1"]["last_error"]
    assert KEY not in str(echoed) and KEY not in str(stopped) and KEY not in caplog.text


def test_stale_s_is_derived_from_the_rate_the_budget_allows_and_the_latency_unless_set():
    gemini = tuple(CameraTracking(id=c, role="end_effector" if c else "overhead", detector="gemini",
                                  references={"0": [0, 0], "1": [1, 0], "2": [1, 1], "3": [0, 1]} if not c
                                  else {}) for c in range(3))
    config = TrackerConfig(cameras=gemini, gemini=GeminiConfig(requests_per_minute=10))
    tracker = Tracker(config, environ={"GEMINI_API_KEY": KEY})
    # 3 cameras sharing one request per 6 s (+ the send margin): the overhead camera is seen every
    # 3 of those, and
    # an answer is assumed to take 10 s until measured
    assert tracker.world.stale_s == pytest.approx(2 * 3 * (6.0 + SEND_SLACK_S) + 10.0)
    assert tracker.world.remove_s == pytest.approx(3 * tracker.world.stale_s)
    aruco = TrackerConfig(markers={"20": "cup"}, cameras=(CameraTracking(
        id=0, references={"0": [0, 0], "1": [1, 0], "2": [1, 1], "3": [0, 1]}),))
    assert Tracker(aruco).world.stale_s == pytest.approx(2 * 2.0 + 0.5)
    fixed = dataclasses.replace(aruco, world=dataclasses.replace(aruco.world, stale_s=7.0))
    assert (Tracker(fixed).world.stale_s, Tracker(fixed).world.remove_s) == (7.0, 30.0)
