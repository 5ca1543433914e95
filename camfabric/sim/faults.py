"""Faults the tests assert on and the benchmarks measure, in one place both can import: a
node's host losing power (a network namespace, see `netns`), and a client subscribing to
20 000 distinct topics.

    with NetnsHost.create() as host, watched_node(host, tmp, context) as (config, gw, robot):
        at_robot, at_gateway = power_cut_and_return(host, config, gw, robot)
    run = measure_flood("tcp://127.0.0.1:0", context, fps=10, window_s=3.0)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import zmq

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway

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
    a frame captured after the cut at the Subscriber, and at the gateway (run by
    tests/faults/test_power_cut.py and benchmarks/faults.py)."""
    host.power_cut()
    cut_ns = time.monotonic_ns()
    time.sleep(1.0)
    host.restore()
    start_node(host, config)
    restarted = time.monotonic()
    frame = robot.latest(0, timeout=limit_s, captured_after_ns=cut_ns)
    assert frame.t_receive_ns > cut_ns
    at_robot = time.monotonic() - restarted
    # The restarted node's first message drops its frames from before (gateway/cache.py), so
    # the cache may hold no frame of camera 0 at all for a moment.
    def fresh_at_gateway() -> bool:
        cached = gateway.cache.latest(0)
        return cached is not None and cached.t_receive_ns > cut_ns

    wait_until(fresh_at_gateway, limit_s - at_robot, "a frame at the gateway after the power cut")
    return at_robot, time.monotonic() - restarted


def wait_until(predicate: Callable[[], object], timeout: float = 3.0, what: str = "condition"):
    """Poll `predicate` (cheap, in-memory checks) until it is truthy; AssertionError after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


FLOOD = 20_000


def delivered_fps(sub: protocol.Subscriber, seconds: float) -> float:
    """Frames a consumer gets per second over `seconds` (new captures only)."""
    frames = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sub.poll(timeout=left) is not None:
            frames += 1
    return frames / seconds


def measure_flood(endpoint: str, context: zmq.Context, fps: float, window_s: float) -> dict:
    """Delivered fps of one camera before, during and after a 20 000-topic flood, with what
    the node's publisher kept and ignored (run by tests/faults/ and
    benchmarks/faults.py)."""
    config = NodeConfig(name="cell", publish=endpoint, cameras=(
        CameraConfig(id=0, fps=fps, resolution=(160, 120)),))
    with CaptureNode(config, context=context) as node, \
            protocol.Subscriber(node.endpoint, cameras=[0], context=context) as sub:
        sub.latest(0, timeout=10)
        before = delivered_fps(sub, window_s)
        flooder = context.socket(zmq.SUB)
        flooder.linger = 0
        flooder.sndhwm = 0  # every one of the 20 000 reaches the node, none dropped on the way
        flooder.connect(node.endpoint)
        for i in range(FLOOD):
            flooder.subscribe(b"flood/%d/" % i)
        during = delivered_fps(sub, window_s)
        kept = len(node.publisher.subscriptions)
        flooder.close(linger=0)  # leaving: 20 000 unsubscriptions
        after = delivered_fps(sub, window_s)
        return {"before": before, "during": during, "after": after, "kept": kept,
                "ignored": node.publisher.ignored_subscriptions,
                "cap": node.publisher.max_subscriptions}
