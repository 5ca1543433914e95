"""A node's host loses power (no FIN, no RST reaches us) and comes back: the camera returns on
its own — at the gateway and at a robot's Subscriber — without restarting either of them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from camfabric import protocol
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway

from ..gateway.support import wait_until
from .netns import NetnsHost

REPO = Path(__file__).resolve().parents[2]
NODE_TOML = """\
[node]
name = "cell"
publish = "tcp://{address}:5550"
insecure = true
[[node.cameras]]
id = 0
fps = 10
resolution = [160, 120]
[node.cameras.source]
kind = "synthetic"
"""


def start_node(host: NetnsHost, config: Path) -> subprocess.Popen:
    return host.spawn([sys.executable, "-m", "camfabric.cli", "node", "--config", str(config)],
                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextmanager
def watched_node(host: NetnsHost, tmp_path: Path, zmq_context) -> Iterator[tuple[Path, Gateway,
                                                                                 protocol.Subscriber]]:
    """A node on `host`, and a gateway and a robot's Subscriber here, both already receiving."""
    config = tmp_path / "node.toml"
    config.write_text(NODE_TOML.format(address=host.address))
    endpoint = f"tcp://{host.address}:5550"
    start_node(host, config)
    with Gateway(GatewayConfig(port=0, subscribe=(endpoint,)), context=zmq_context) as gateway, \
            protocol.Subscriber(endpoint, cameras=[0], context=zmq_context) as robot:
        robot.latest(0, timeout=30)  # a cold start imports OpenCV: generous
        wait_until(lambda: requests.get(gateway.url + "latest/0", timeout=2).ok, 10,
                   "first frame at the gateway")
        yield config, gateway, robot


def test_a_camera_comes_back_on_its_own_after_its_host_power_cut(host, tmp_path, zmq_context):
    with watched_node(host, tmp_path, zmq_context) as (config, gateway, robot):
        host.power_cut()
        cut_ns = time.monotonic_ns()
        time.sleep(1.0)
        host.restore()
        start_node(host, config)
        restarted = time.monotonic()

        frame = robot.latest(0, timeout=10, captured_after_ns=cut_ns)
        assert frame.t_receive_ns > cut_ns
        wait_until(lambda: gateway.cache.latest(0).t_receive_ns > cut_ns,
                   10 - (time.monotonic() - restarted), "a frame at the gateway after the power cut")
        answer = requests.get(gateway.url + "latest/0", timeout=2)
        assert answer.status_code == 200
        assert int(answer.headers["X-Frame-Age-Ms"]) < 2000
        assert time.monotonic() - restarted < 10
