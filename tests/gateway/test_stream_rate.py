"""`?fps=N` on the stream routes: at most N parts per second, each the newest frame — so a
reader that takes one part per 2 s asks for `?fps=0.5` and never builds a backlog, on any
link and whatever its kernel's receive buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import Publisher
from camfabric.sim.netns import NetnsHost, available

from ..conftest import ANY_PORT
from .support import FakeNode, Feeder, RawHttp, deliver, read_part_by_length
from .test_streaming import scene

REPO = Path(__file__).resolve().parents[2]
READER = [sys.executable, "-m", "tests.gateway.paced_reader"]


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=4, threads=8)
    deliver(node, gw.cache, 0)
    return gw


@pytest.mark.parametrize("path", ["/cam/0?fps=5", "/stream.mjpg?fps=5", "/?action=stream&fps=5"])
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_stream_at_fps_n_sends_at_most_n_parts_a_second_each_the_newest(gateway, node, path,
                                                                          version):
    with Feeder(node, fps=40):
        conn = RawHttp(gateway.url, path, version=version)
        try:
            parts = [read_part_by_length(conn)]  # the first at once
            started = time.monotonic()
            ages = []
            while time.monotonic() - started < 3.0:
                part = read_part_by_length(conn)
                ages.append(time.time() - part.timestamp)
                parts.append(part)
            elapsed = time.monotonic() - started
        finally:
            conn.close()
    later = len(parts) - 1
    assert later <= 5 * elapsed + 1, (later, elapsed)  # the contract: at most N a second
    assert later >= 5 * 3.0 - 3, later  # and not far fewer from a camera at 40
    assert max(ages) < 0.5, [round(a, 3) for a in ages]  # each the newest frame, not a queued one


@pytest.mark.parametrize("fps", ["0", "-1", "abc", "nan", "inf", "121", "1e400"])
def test_a_bad_fps_is_a_400_naming_it(gateway, fps):
    answer = requests.get(gateway.url + f"cam/0?fps={fps}", timeout=5)
    assert answer.status_code == 400 and answer.json()["title"] == "Bad fps"
    assert gateway.slots.in_use == 0


def test_fps_given_twice_is_ambiguous(gateway):
    answer = requests.get(gateway.url + "cam/0?fps=1&fps=2", timeout=5)
    assert answer.status_code == 400 and "'fps'" in answer.json()["description"]


SECONDS = 30
PERIOD = 2.0


@pytest.mark.slow
@pytest.mark.skipif(bool(available()), reason=f"needs network namespaces: {available()}")
def test_a_reader_taking_one_part_per_2s_across_a_veth_sees_parts_under_1s_old(zmq_context):
    """For 30 s, across a veth link between network namespaces, with the system's default
    buffers: one part every 2 s at `?fps=0.5`, every part under 1 s old. Beside it, the same
    reader without `?fps` (measured, printed, not asserted: that is the window's business)."""
    with NetnsHost.create() as host, Publisher(ANY_PORT, context=zmq_context) as publisher:
        config = GatewayConfig(host=host.peer, port=0, subscribe=(publisher.endpoint,), max_streams=2,
                               threads=4, allow_from=(f"{host.address}/32",))
        node = FakeNode(publisher)
        gateway = Gateway(config, context=zmq_context).start()
        try:
            deliver(node, gateway.cache, 0)
            url = f"http://{host.peer}:{gateway.port}/cam/0"
            with Feeder(node, fps=15, image=scene(1280, 720)):
                readers = {
                    "paced": host.spawn([*READER, url + "?fps=0.5", str(PERIOD), str(SECONDS)],
                                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True),
                    "unpaced": host.spawn([*READER, url, str(PERIOD), str(SECONDS)],
                                          cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True),
                }
                outputs = {name: proc.communicate(timeout=SECONDS + 30)
                           for name, proc in readers.items()}
        finally:
            gateway.stop()
    ages = {}
    for name, (out, err) in outputs.items():
        assert readers[name].returncode == 0, (name, err)
        ages[name] = [round(json.loads(line)["age_s"], 3) for line in out.splitlines()]
    print("ages of parts read one per 2 s:", ages)
    assert len(ages["paced"]) == int(SECONDS / PERIOD), ages["paced"]
    assert max(ages["paced"]) < 1.0, ages["paced"]
