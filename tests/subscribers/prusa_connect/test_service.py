"""UploaderService in-process: a CURVE-secured node, the published status, stop within the limit,
and a subscription to the camera's frames held only around an upload."""

from __future__ import annotations

import time

from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.protocol import (
    CurveClient,
    CurveServer,
    Frame,
    Publisher,
    Subscriber,
    generate_keypair,
    topics,
)
from camfabric.subscribers.prusa_connect.config import (
    CameraUpload,
    PrusaConnectConfig,
)
from camfabric.subscribers.prusa_connect.service import UploaderService
from tests.conftest import ANY_PORT

from .conftest import TOKEN_A, jpeg_for


def test_frames_from_a_curve_secured_node_are_uploaded_and_the_state_published(connect, zmq_context,
                                                                               tmp_path):
    node_public, node_secret = generate_keypair(tmp_path / "keys", "node")
    client_public, client_secret = generate_keypair(tmp_path / "keys", "uploader")
    allowed = tmp_path / "authorized"
    allowed.mkdir()
    (allowed / client_public.name).write_bytes(client_public.read_bytes())
    with Publisher(ANY_PORT, context=zmq_context, curve=CurveServer(node_secret, allowed)) as pub:
        node = pub.endpoint
        config = PrusaConnectConfig(
            server=connect.url, nodes=(node,), publish=ANY_PORT, state_dir=tmp_path / "state",
            timeout_s=2.0, status_interval_s=0.2,
            cameras=(CameraUpload(cam=0, token=TOKEN_A, name="Bed", interval_s=10),),
            curve={node: CurveClient(secret_key_file=client_secret, server_public_key_file=node_public)},
        )
        service = UploaderService(config, context=zmq_context).start()
        watch = Subscriber(service.publisher.endpoint, cameras=[],
                           topics_extra=(topics.status("prusa_connect"),), context=zmq_context).start()
        try:
            # The first upload is due at once: the uploader subscribes to the camera's JPEG ...
            assert pub.wait_for_subscriber(b"frame/0/jpeg", timeout=5)
            seq = 0
            deadline = time.monotonic() + 5
            while not connect.snapshots(TOKEN_A) and time.monotonic() < deadline:
                seq += 1
                pub.publish(Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=64, h=48,
                                  encoding="jpeg", data=jpeg_for(seq), node="secure"))
                time.sleep(0.1)
            assert len(connect.snapshots(TOKEN_A)) == 1
            # ... and lets go of it once the upload is done: the node encodes nothing for it
            # until the next upload is due, 10 s later.
            deadline = time.monotonic() + 3
            while pub.wants(b"frame/0/jpeg") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pub.wants(b"frame/0/jpeg")
            assert pub.wants(b"meta/0/")  # the camera's heartbeat still comes through
            deadline = time.monotonic() + 3
            state = {}
            while time.monotonic() < deadline:
                msg = watch.message(topics.status("prusa_connect"))
                state = msg.state["cameras"].get("0", {}) if msg else {}
                if state.get("uploads", 0) >= 1:
                    break
                time.sleep(0.05)
            assert state["state"] == "ok" and state["name"] == "Bed"
            assert state["next_attempt"] >= state["last_upload"] + 9
            assert TOKEN_A not in repr(msg.state)
        finally:
            watch.close()
            started = time.monotonic()
            service.stop()
            assert time.monotonic() - started < 2.0


def test_a_camera_only_the_uploader_watches_is_encoded_at_most_twice_per_upload(connect, zmq_context,
                                                                                tmp_path):
    """A real node and a camera nobody else watches: its own encode counter over three uploads
    10 s apart is at most two per upload — the frame uploaded, and one captured while the
    unsubscription travels — where a subscription held ahead of the upload costs the node the
    camera's frame rate for that long. Each frame uploaded was captured after its upload was
    due (Connect receives one every interval, and never the same one twice)."""
    camera = CameraConfig(id=0, name="bed", role="overhead", resolution=(160, 120), fps=10)
    node = CaptureNode(NodeConfig(name="n", publish="tcp://127.0.0.1:0", cameras=(camera,)),
                       zmq_context).start()
    try:
        counters = node.loops[0].counters
        config = PrusaConnectConfig(
            server=connect.url, nodes=(node.endpoint,), publish=ANY_PORT, state_dir=tmp_path / "state",
            timeout_s=2.0, cameras=(CameraUpload(cam=0, token=TOKEN_A, name="Bed", interval_s=10),))
        with UploaderService(config, context=zmq_context):
            deadline = time.monotonic() + 40.0
            while len(connect.snapshots(TOKEN_A)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            uploads = len(connect.snapshots(TOKEN_A))
        time.sleep(0.5)  # an encode still in hand as the uploader stopped is counted too
        encodes = counters["encodes"]
        assert uploads >= 3 and counters["frames"] >= 5 * uploads
        # the last turn may have subscribed again (its frame not yet taken) as the service stopped
        assert encodes <= 2 * (uploads + 1), (encodes, uploads)
        snapshots = connect.snapshots(TOKEN_A)
        assert len({r.sha256 for r in snapshots}) == len(snapshots)
        assert all(b.time - a.time >= 10.0 for a, b in zip(snapshots, snapshots[1:], strict=False))
    finally:
        node.stop()
