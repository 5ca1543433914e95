"""Faults on the proxy's two hops: a node behind it whose host loses power is noticed upstream
and its camera returns on its own; a client key removed from the proxy's authorized_keys_dir
is cut off within seconds, without restarting the proxy."""

from __future__ import annotations

import logging
import time

import pytest

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import CurveClient, CurveServer, topics
from camfabric.proxy import FabricProxy, ProxyConfig
from camfabric.sim.faults import NODE_TOML, start_node

from .revocation import revoke_and_watch
from .test_curve import keys  # noqa: F401  (a fixture)


# Short: the proxy's next heartbeat draws an RST from the rebooted host. Long: the heartbeat
# timeout must drop the silent connection while the host is still away.
@pytest.mark.parametrize("outage_s", [1.0, 6.0])
def test_a_node_behind_the_proxy_comes_back_after_its_host_power_cut(host, tmp_path, zmq_context,
                                                                     outage_s):
    config = tmp_path / "node.toml"
    config.write_text(NODE_TOML.format(address=host.address))
    start_node(host, config)
    upstream = f"tcp://{host.address}:5550"
    with FabricProxy(ProxyConfig(upstream=[upstream], publish="tcp://127.0.0.1:0"),
                     context=zmq_context) as proxy, \
            protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context) as robot:
        robot.latest(0, timeout=30)  # a cold start imports OpenCV: generous
        host.power_cut()  # the proxy's upstream connection stays ESTABLISHED: no FIN, no RST
        cut_ns = time.monotonic_ns()
        time.sleep(outage_s)
        host.restore()
        start_node(host, config)
        restarted = time.monotonic()
        frame = robot.latest(0, timeout=10, captured_after_ns=cut_ns)
        assert frame.t_receive_ns > cut_ns
        assert time.monotonic() - restarted < 10
        # What the robot sees is fresh: a frame of the new node, not one kept from before.
        assert robot.latest(0, timeout=2).age_ns() < 2_000_000_000


def test_a_key_removed_from_the_proxys_directory_receives_nothing_within_5_s(
        keys, ipc_endpoint, zmq_context, caplog):  # noqa: F811
    made, authorized = keys
    node_config = NodeConfig(name="cell", publish=ipc_endpoint, cameras=(
        CameraConfig(id=0, fps=10, resolution=(160, 120)),))
    proxy_config = ProxyConfig(upstream=[ipc_endpoint], publish="tcp://127.0.0.1:0",
                               curve=CurveServer(made["node"][1], authorized))

    def client(name: str) -> protocol.Subscriber:
        return protocol.Subscriber(proxy.endpoint, cameras=[0], context=zmq_context,
                                   curve=CurveClient(made[name][1], made["node"][0]),
                                   log=logging.getLogger(f"test.{name}"))

    with CaptureNode(node_config, context=zmq_context), \
            FabricProxy(proxy_config, context=zmq_context) as proxy, \
            client("alice") as alice, client("bob") as bob:
        revoke_and_watch(authorized, alice, bob, caplog)
        # The dropped connections left the proxy's count true: only Bob wants camera 0 now,
        # so the node stops encoding once he leaves.
        assert proxy.subscribers[topics.frame(0, "jpeg")] == 1
    said = [r.getMessage() for r in caplog.records if r.name == "test.alice"]
    assert any("refused this client's key" in line for line in said), said
