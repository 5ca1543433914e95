"""Raw frames at the pixel cap cannot blow up the gateway's memory: concurrent requests for a
frame share one decode, few frames are decoded at once, and answers are sent without a copy
— measured on a real gateway process. (Of eight requests at once, four wait for the next
frame and four are told to retry: at most four requests wait per camera.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import requests

from camfabric.gateway.rawframes import RawBusy, RawFrames
from camfabric.protocol import Frame, Publisher, encode_jpeg
from camfabric.protocol.jpeg import MAX_PIXELS
from tests.conftest import REPO

from .support import FakeNode, wait_until

SIDE = 5792  # 5792 x 5792 = 33 547 264 pixels, just under the cap of 2^25
RAW_BYTES = SIDE * SIDE * 3
CONCURRENT = 8
PEAK_RSS_MB = 400  # the bound: a 100 MB decode at a time or two, not one per request


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    assert SIDE * SIDE <= MAX_PIXELS
    ramp = ((np.arange(SIDE) // 8) % 256).astype(np.uint8)
    image = np.empty((SIDE, SIDE, 3), np.uint8)
    image[..., 0] = ramp[None, :]
    image[..., 1] = ramp[:, None]
    image[..., 2] = ramp[None, :] // 2 + ramp[:, None] // 2
    return encode_jpeg(image, quality=30)  # about 550 KB


def big_frame(jpeg: bytes, seq: int) -> Frame:
    return Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=SIDE, h=SIDE, encoding="jpeg",
                 data=jpeg, node="node-a", frame_id="f")


def test_concurrent_requests_for_one_frame_share_one_decode(big_jpeg):
    raw = RawFrames(max_images=1, wait_s=0.2)
    frame = big_frame(big_jpeg, 1)
    bodies = []
    lock = threading.Lock()

    def ask() -> None:
        body = raw.open(frame)
        with lock:
            bodies.append(body)

    threads = [threading.Thread(target=ask) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(bodies) == CONCURRENT and raw.decodes == 1
    assert {body.nbytes for body in bodies} == {RAW_BYTES}
    assert sum(len(chunk) for chunk in bodies[0]) == RAW_BYTES
    with pytest.raises(RawBusy):  # another frame waits for room: none while these are open
        raw.open(big_frame(big_jpeg, 2))
    for body in bodies:
        body.close()
    assert raw.held == 0
    body = raw.open(big_frame(big_jpeg, 3))  # room again
    body.close()
    assert raw.decodes == 2 and raw.held == 0


@pytest.fixture
def gateway_process(tmp_path, publisher):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nport = 0\nworkers = 1\nsubscribe = ["{publisher.endpoint}"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "camfabric.cli", "gateway", "--config",
                             str(config)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split("camfabric gateway: ", 1)[1].split()[0]
        yield proc, url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_eight_raw_requests_at_the_pixel_cap_stay_under_the_memory_bound(
        big_jpeg, publisher, gateway_process):
    proc, url = gateway_process
    node = FakeNode(publisher)
    stop = threading.Event()

    def camera() -> None:  # 5 frames a second of the big JPEG, and heartbeats
        seq = 0
        while not stop.wait(0.2):
            seq += 1
            node.meta(0)
            publisher.publish(big_frame(big_jpeg, seq))

    threading.Thread(target=camera, daemon=True).start()
    process = psutil.Process(proc.pid)
    peak = [0]

    def sample() -> None:
        while not stop.wait(0.005):
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.Error:
                return

    answers: list[tuple[int, int, str | None]] = []
    lock = threading.Lock()

    def fetch() -> None:
        # A polite client: turned away (503: enough requests wait or enough frames are
        # decoded), it asks again as Retry-After says.
        for _ in range(10):
            with requests.get(url + "frame/0?format=raw", stream=True, timeout=60) as answer:
                size = sum(len(chunk) for chunk in answer.iter_content(1 << 20))
                retry = answer.headers.get("Retry-After")
                with lock:
                    answers.append((answer.status_code, size, retry))
            if answer.status_code != 503 or retry is None:
                return
            time.sleep(float(retry))

    try:
        wait_until(lambda: requests.get(url + "latest/0", timeout=5).ok, timeout=30,
                   what="the big camera served")
        # Warm up: OpenCV loaded, one raw frame decoded and sent, before the baseline.
        fetch()
        time.sleep(0.5)
        baseline = process.memory_info().rss
        answers.clear()
        threading.Thread(target=sample, daemon=True).start()
        fetchers = [threading.Thread(target=fetch) for _ in range(CONCURRENT)]
        for fetcher in fetchers:
            fetcher.start()
        for fetcher in fetchers:
            fetcher.join(120)
    finally:
        stop.set()
    print(f"gateway RSS: {baseline / 2**20:.0f} MB before, peak {peak[0] / 2**20:.0f} MB with "
          f"{CONCURRENT} raw requests; answers {[a[0] for a in answers]}")
    served = [a for a in answers if a[0] == 200]
    assert len(served) == CONCURRENT and all(size == RAW_BYTES for _, size, _ in served)
    assert all(status == 503 and retry for status, _, retry in answers if status != 200)
    assert peak[0] < PEAK_RSS_MB * 2**20


@pytest.fixture
def publisher(zmq_context):
    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as pub:
        yield pub
