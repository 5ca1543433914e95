"""MJPEG readers on another host, over a 100 Mbit/s link with Ethernet's packet size: a slow
reader's parts stay fresh on a LAN too, and a fast reader beside it gets every frame.

What a reader's own kernel holds is out of the server's sight once that kernel grows the
receive buffer ahead of the reads (Linux does, up to `tcp_rmem`'s maximum, 32 MiB since 6.16):
the slow reader here sets its buffer, as docs/http-api.md advises robot code to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import Publisher

from ..conftest import ANY_PORT
from ..gateway.support import FakeNode, Feeder, deliver
from ..gateway.test_streaming import scene

READER = [sys.executable, "-m", "tests.faults.slow_reader"]
REPO = Path(__file__).resolve().parents[2]
SECONDS = 15


def shape_link(host) -> None:
    """Each side sends at 100 Mbit/s (a token bucket); the veth's MTU is Ethernet's."""
    for netns, dev in ((None, host.veth), (host.netns, host.veth_peer)):
        shaped = subprocess.run([*(["ip", "netns", "exec", netns] if netns else []), "tc", "qdisc",
                                 "add", "dev", dev, "root", "tbf", "rate", "100mbit", "burst",
                                 "64kb", "latency", "50ms"], capture_output=True, text=True)
        if shaped.returncode != 0:
            pytest.skip(f"shaping the link needs tc's tbf qdisc: {shaped.stderr.strip()}")


@pytest.mark.slow  # a shaped LAN in a namespace for 15 s: a scenario, run by .ci/run
def test_a_slow_reader_across_a_lan_sees_fresh_parts_and_a_fast_one_every_frame(
        host, zmq_context):
    shape_link(host)
    with Publisher(ANY_PORT, context=zmq_context) as publisher:
        config = GatewayConfig(host=host.peer, port=0, subscribe=(publisher.endpoint,), max_streams=2,
                               threads=4, allow_from=(f"{host.address}/32",))
        node = FakeNode(publisher)
        gateway = Gateway(config, context=zmq_context).start()
        try:
            deliver(node, gateway.cache, 0)
            url = f"http://{host.peer}:{gateway.port}/cam/0"
            with Feeder(node, fps=15, image=scene(1280, 720)) as feeder:
                readers = {
                    "slow": host.spawn([*READER, url, "0.5", str(SECONDS), str(256 * 1024)],
                                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True),
                    "fast": host.spawn([*READER, url, "0", str(SECONDS)], cwd=REPO,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                }
                outputs = {name: proc.communicate(timeout=SECONDS + 25)
                           for name, proc in readers.items()}
                published = feeder.published
        finally:
            gateway.stop()
    ages = {}
    for name, (out, err) in outputs.items():
        assert readers[name].returncode == 0, (name, err)
        ages[name] = [json.loads(line)["age_s"] for line in out.splitlines()]
    slow, fast = ages["slow"], ages["fast"]
    assert len(slow) >= 20, slow
    assert max(slow[-10:]) < 1.5, [round(a, 2) for a in slow]
    assert len(fast) >= 0.8 * published * SECONDS / (SECONDS + 2), (len(fast), published)
    assert max(fast[5:]) < 0.5, [round(a, 2) for a in fast]
