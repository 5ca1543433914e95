"""CURVE an operator can run: a key removed from authorized_keys_dir cuts that client off
within seconds without restarting the node; every refusal says which side is wrong."""

from __future__ import annotations

import logging
import time

import pytest

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import CurveClient, generate_keypair

from ..conftest import ANY_PORT
from ..gateway.support import wait_until
from .revocation import revoke_and_watch


@pytest.fixture
def keys(tmp_path):
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    made = {name: generate_keypair(tmp_path / name, name) for name in ("node", "alice", "bob", "eve")}
    for name in ("alice", "bob"):
        (authorized / f"{name}.key").write_bytes(made[name][0].read_bytes())
    return made, authorized


@pytest.fixture
def curve_node(keys, zmq_context):
    made, authorized = keys
    config = NodeConfig(name="cell", publish=ANY_PORT, cameras=(
        CameraConfig(id=0, fps=10, resolution=(160, 120)),),
        curve={"secret_key_file": str(made["node"][1]), "authorized_keys_dir": str(authorized)})
    with CaptureNode(config, context=zmq_context) as node:
        yield node


def made_key(keys, name) -> str:
    import zmq.auth
    return zmq.auth.load_certificate(str(keys[0][name][0]))[0].decode()


def client(name, keys, endpoint, zmq_context, server_key=None) -> protocol.Subscriber:
    made, _ = keys
    curve = CurveClient(made[name][1], server_key or made["node"][0])
    return protocol.Subscriber(endpoint, cameras=[0], context=zmq_context, curve=curve,
                               log=logging.getLogger(f"test.{name}"))


def test_a_removed_key_receives_nothing_within_5_s_and_the_others_carry_on(
        keys, curve_node, zmq_context, caplog):
    _, authorized = keys
    with client("alice", keys, curve_node.endpoint, zmq_context) as alice, \
            client("bob", keys, curve_node.endpoint, zmq_context) as bob:
        revoke_and_watch(authorized, alice, bob, caplog)
    refused = [r.getMessage() for r in caplog.records if "refused a CURVE client" in r.getMessage()]
    assert len(refused) == 1, refused  # once per peer, however often it retries
    assert made_key(keys, "alice") in refused[0]  # names the key, so the operator can find it
    said = [r.getMessage() for r in caplog.records if r.name == "test.alice"]
    assert any("refused this client's key" in line and "authorized_keys_dir" in line for line in said)


def test_a_client_holding_the_wrong_server_key_is_told_which_file_is_wrong(
        keys, curve_node, zmq_context, caplog):
    made, _ = keys
    with caplog.at_level(logging.WARNING), \
            client("alice", keys, curve_node.endpoint, zmq_context, server_key=made["bob"][0]) as alice, \
            pytest.raises(protocol.FrameTimeout):
        alice.latest(0, timeout=3)
    said = [r.getMessage() for r in caplog.records if r.name == "test.alice"]
    assert len(said) == 1, said  # once, however often ZeroMQ retried
    assert "server public key file" in said[0] and str(made["bob"][0]) in said[0]
    node_said = [r.getMessage() for r in caplog.records if "failed the CURVE handshake" in r.getMessage()]
    assert len(node_said) == 1 and "wrong public key for this node" in node_said[0]


def test_a_key_added_to_the_directory_is_admitted_without_a_restart(keys, curve_node, zmq_context):
    made, authorized = keys
    with client("eve", keys, curve_node.endpoint, zmq_context) as eve, \
            pytest.raises(protocol.FrameTimeout):
        eve.latest(0, timeout=2)
    (authorized / "eve.key").write_bytes(made["eve"][0].read_bytes())
    time.sleep(1.5)  # the node looks at the directory once a second
    with client("eve", keys, curve_node.endpoint, zmq_context) as eve:
        assert eve.latest(0, timeout=5).cam == 0


@pytest.mark.parametrize("who, server, expected_rc, says", [
    ("alice", "node", 0, "handshake succeeded"),
    ("eve", "node", 1, "authorized_keys_dir"),
    ("alice", "bob", 1, "server public key file"),
])
def test_keys_check_says_which_side_is_wrong(keys, curve_node, capsys, who, server, expected_rc, says):
    from camfabric.cli import main

    made, _ = keys
    rc = main(["keys", "check", curve_node.endpoint, "--secret-key-file", str(made[who][1]),
               "--server-public-key-file", str(made[server][0])])
    out = capsys.readouterr().out
    assert rc == expected_rc, out
    assert says in out


def test_keys_check_finds_a_public_key_given_as_the_secret(keys, capsys):
    from camfabric.cli import main

    made, authorized = keys
    rc = main(["keys", "check", "--secret-key-file", str(made["node"][0]),
               "--authorized-keys-dir", str(authorized)])
    out = capsys.readouterr().out
    assert rc == 1 and "holds no secret key" in out and "2 client key(s) admitted" in out


def test_with_keys_per_endpoint_the_message_names_the_files_of_that_endpoint(
        keys, curve_node, zmq_context, caplog, closed_port):
    made, _ = keys
    elsewhere = f"tcp://127.0.0.1:{closed_port}"
    curve = {elsewhere: CurveClient(made["eve"][1], made["node"][0]),  # nothing listens there
             curve_node.endpoint: CurveClient(made["alice"][1], made["bob"][0])}

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "test.multi"]

    with caplog.at_level(logging.WARNING), \
            protocol.Subscriber([elsewhere, curve_node.endpoint], cameras=[0], curve=curve,
                                context=zmq_context, log=logging.getLogger("test.multi")):
        wait_until(said, timeout=5, what="the failed handshake logged")
    assert len(said()) == 1 and curve_node.endpoint in said()[0]
    assert str(made["bob"][0]) in said()[0] and str(made["node"][0]) not in said()[0]
