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


def power_cut_and_return(host: NetnsHost, config: Path, gateway: Gateway,
                         robot: protocol.Subscriber, limit_s: float = 10.0) -> tuple[float, float]:
    """Cut the host's power, bring it back with a new node; seconds from that node's start to
    a frame captured after the cut at the Subscriber, and at the gateway (also run by
    benchmarks/faults.py)."""
    host.power_cut()
    cut_ns = time.monotonic_ns()
    time.sleep(1.0)
    host.restore()
    start_node(host, config)
    restarted = time.monotonic()
    frame = robot.latest(0, timeout=limit_s, captured_after_ns=cut_ns)
    assert frame.t_receive_ns > cut_ns
    at_robot = time.monotonic() - restarted
    wait_until(lambda: gateway.cache.latest(0).t_receive_ns > cut_ns,
               limit_s - at_robot, "a frame at the gateway after the power cut")
    return at_robot, time.monotonic() - restarted


def test_a_camera_comes_back_on_its_own_after_its_host_power_cut(host, tmp_path, zmq_context):
    with watched_node(host, tmp_path, zmq_context) as (config, gateway, robot):
        at_robot, at_gateway = power_cut_and_return(host, config, gateway, robot)
        answer = requests.get(gateway.url + "latest/0", timeout=2)
        assert answer.status_code == 200
        assert int(answer.headers["X-Frame-Age-Ms"]) < 2000
        assert max(at_robot, at_gateway) < 10
