"""`camfabric demo` wires the tracker where the gateway takes `world` from, and a gateway
connects to no tracker or service endpoint that nobody configured."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import zmq

from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import wire

# The tracker's and the uploader's usual ports: what an impostor would bind.
USUAL_PORTS = (5560, 5561)


class Impostor:
    """An XPUB on a usual service port that notes every subscription and answers each with a
    forged world model."""

    def __init__(self, context: zmq.Context, port: int) -> None:
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(f"tcp://127.0.0.1:{port}")
        except zmq.ZMQError as exc:
            self.socket.close()
            pytest.skip(f"port {port} is taken on this machine ({exc}); the impostor needs it")
        self.subscriptions: list[bytes] = []

    def serve(self, seconds: float) -> None:
        """Answer subscriptions for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                self.subscriptions.append(self.socket.recv())
                forged = wire.World(model={"objects": [{"label": "evil"}], "updated": time.time()})
                self.socket.send_multipart(wire.encode(forged))


@contextlib.contextmanager
def impostors() -> Iterator[list[Impostor]]:
    context = zmq.Context()
    found: list[Impostor] = []
    try:
        for port in USUAL_PORTS:
            found.append(Impostor(context, port))
        yield found
    finally:
        for impostor in found:
            impostor.socket.close()
        context.term()


def gateway_scenario() -> dict:
    """A gateway with no tracker configured, impostors on the usual ports: what it serves."""
    context = zmq.Context()
    try:
        with impostors() as fakes:
            config = GatewayConfig(port=0, subscribe=("tcp://127.0.0.1:1",))  # no node there
            with Gateway(config, context=context) as gateway:
                for fake in fakes:
                    fake.serve(1.0)
                world = requests.get(gateway.url + "world", timeout=5).json()
            return {"world": world, "subscriptions": [len(f.subscriptions) for f in fakes]}
    finally:
        context.term()


def demo_scenario() -> dict:
    """`camfabric demo --tracker-port 0` beside impostors on the usual ports: its /world."""
    with impostors() as fakes:
        demo = subprocess.Popen(
            [sys.executable, "-m", "camfabric.cli", "demo", "--port", "0", "--node-port", "0",
             "--tracker-port", "0", "--fps", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = demo.stdout.readline()
            assert "open http://" in line, line
            url = line.split("open ", 1)[1].split()[0]
            objects: list = []
            deadline = time.monotonic() + 30
            while not objects and time.monotonic() < deadline:
                for fake in fakes:
                    fake.serve(0.25)
                objects = requests.get(url + "world", timeout=5).json()["objects"]
        finally:
            demo.terminate()
            demo.wait(10)
        return {"objects": objects, "subscriptions": [len(f.subscriptions) for f in fakes]}


def in_own_network(scenario: str) -> dict:
    """Run `scenario` in a network namespace of its own, whose loopback nobody else uses (the
    usual ports of a shared machine may be bound, or connected to, by other gateways)."""
    script = (f"import json, subprocess; subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True); "
              f"from tests.test_demo import {scenario}; print(json.dumps({scenario}()))")
    try:
        done = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no `unshare` on this machine: a network namespace is needed")
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"network namespaces refused here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gateway_with_no_tracker_configured_connects_to_no_impostor():
    seen = in_own_network("gateway_scenario")
    assert seen["world"]["objects"] == [] and seen["world"]["updated"] is None
    assert seen["subscriptions"] == [0, 0]  # nobody connected to 5560 or 5561


def test_the_demo_shows_its_trackers_world_and_connects_to_no_usual_port():
    seen = in_own_network("demo_scenario")
    assert seen["objects"], "the demo's /world never showed its tracker's objects"
    assert all(obj.get("label") != "evil" for obj in seen["objects"])
    assert seen["subscriptions"] == [0, 0]
