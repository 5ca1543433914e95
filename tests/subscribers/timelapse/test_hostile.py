"""The timelapse under the failures a printer owner meets: Moonraker restarted mid-print, the
camera's node killed for 10 s, a storm of layer changes, Klipper restarting under a print — the
print goes on, frames are never older than their trigger, and what was skipped is counted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import falcon.testing

from camfabric import protocol
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from tests.conftest import PYTHON, REPO

from .conftest import SETTLE_S, manifest, output_files, rendered, taken, video_frames, wait_for


def test_moonraker_killed_mid_print_and_restarted_the_print_goes_on_in_one_video(node, moonraker,
                                                                                  make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("bracket.gcode")
    sent = {}
    for layer in range(1, 4):
        sent[layer] = moonraker.set_layer(layer)
        time.sleep(0.15)
    wait_for(lambda: taken(service) == 3, what="three frames")
    moonraker.stop()  # killed: no close frame
    wait_for(lambda: not service.link.connected, what="the link to notice")
    for layer in range(4, 7):  # Klipper prints on while Moonraker is down
        moonraker.print_stats["info"] = dict(moonraker.print_stats["info"], current_layer=layer)
    moonraker.start()  # same port
    assert moonraker.wait_subscribed(10)
    sent[6] = time.time_ns()  # the subscription's answer reports layer 6: one frame for it
    wait_for(lambda: taken(service) == 4, what="the frame of the layer reached while away")
    for layer in range(7, 10):
        sent[layer] = moonraker.set_layer(layer)
        time.sleep(0.15)
    moonraker.finish("complete")
    (entry,) = rendered(service)

    assert entry["ok"] and entry["frames_skipped"] == 0, entry
    frames = manifest(service, entry)
    assert [f["layer"] for f in frames] == [1, 2, 3, 6, 7, 8, 9]
    for f in frames:
        assert f["t_capture_ns"] >= sent[f["layer"]] + SETTLE_S * 1e9
    assert video_frames(service.frames_root.parent / entry["video"]) == 7
    assert len(moonraker.identified) == 2 and service.link.connects == 2


def _start_node(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    handle = log.open("ab")
    proc = subprocess.Popen([PYTHON, "-m", "camfabric.cli", "node", "--config", str(config)],
                            cwd=REPO, stdout=handle, stderr=handle)
    found = wait_for(lambda: re.search(r"ready on ((?:tcp|ipc)://\S+)", log.read_text()), 30,
                     "the node to start")
    # "ready" is said once the node publishes; its camera's first frame may come a while later
    # on a loaded machine, and a layer's frame waits only frame_timeout_s (2 s) for it.
    with protocol.Subscriber(found.group(1), cameras=[0]) as camera:
        camera.latest(0, timeout=30)
    return proc, found.group(1)


def test_the_node_killed_for_10_s_mid_print_frames_are_skipped_and_the_video_still_renders(
        tmp_path, moonraker, make_service, ipc_endpoint):
    # The node comes back where it was, as systemd restarts it: on a Unix socket, since a TCP
    # port left free for 10 s may be taken by any other program's connection meanwhile.
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "printer-pi"\npublish = "{ipc_endpoint}"\n'
                      '[[node.cameras]]\nid = 0\nresolution = [160, 120]\nfps = 30\n')
    node, endpoint = _start_node(config, tmp_path / "node-1.log")
    assert endpoint == ipc_endpoint
    try:
        service = make_service(endpoint, moonraker.url, frame_timeout_s=2.0)
        assert moonraker.wait_subscribed()
        moonraker.start_print("tower.gcode")
        for layer in (1, 2):
            moonraker.set_layer(layer)
            time.sleep(0.2)
        wait_for(lambda: taken(service) == 2, what="two frames")
        node.send_signal(signal.SIGKILL)
        node.wait(5)
        killed = time.monotonic()
        for layer in (3, 4):  # the camera is gone: these frames cannot be taken
            moonraker.set_layer(layer)
            time.sleep(2.5)
        wait_for(lambda: service.recording and service.recording.skipped["no_frame"] == 2,
                 what="two skipped frames")
        time.sleep(max(0.0, 10.0 - (time.monotonic() - killed)))
        node, _ = _start_node(config, tmp_path / "node-2.log")  # back where it was
        for layer in (5, 6):
            sent = moonraker.set_layer(layer)
            time.sleep(0.2)
        wait_for(lambda: taken(service) == 4, 15, "frames from the restarted node")
        moonraker.finish("complete")
        (entry,) = rendered(service)
    finally:
        node.kill()
        node.wait(5)

    assert entry["ok"] and (entry["frames_taken"], entry["frames_skipped"]) == (4, 2), entry
    frames = manifest(service, entry)
    assert [f["layer"] for f in frames] == [1, 2, 5, 6]
    assert frames[-1]["t_capture_ns"] >= sent + SETTLE_S * 1e9
    assert video_frames(service.frames_root.parent / entry["video"]) == 4


def test_a_storm_of_100_layer_changes_in_1_s_never_gives_a_frame_older_than_its_trigger(
        node, moonraker, make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("storm.gcode")
    sent = {}
    for layer in range(1, 101):
        sent[layer] = moonraker.set_layer(layer)
        time.sleep(0.01)
    wait_for(lambda: service.totals["triggers"] == 100, what="100 triggers")
    moonraker.finish("complete")
    (entry,) = rendered(service)

    frames = manifest(service, entry)
    assert entry["ok"] and entry["frames_taken"] == len(frames) >= 2, entry
    assert entry["frames_taken"] + entry["frames_skipped"] == 100  # every trigger accounted for
    assert service.status()["renders"][0]["frames_skipped"] == entry["frames_skipped"]
    assert [f["layer"] for f in frames] == sorted(f["layer"] for f in frames)
    assert frames[-1]["layer"] == 100  # the last layer is never the one dropped
    for f in frames:
        assert f["t_capture_ns"] >= sent[f["layer"]] + SETTLE_S * 1e9, f
    assert video_frames(service.frames_root.parent / entry["video"]) == len(frames)
    assert service.link.connected and service.recorder.pending() == 0


def test_klipper_restarting_under_a_print_ends_it_with_what_was_recorded(node, moonraker, make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("shutdown.gcode")
    moonraker.set_layer(1)
    wait_for(lambda: taken(service) == 1, what="a frame")
    moonraker.klippy_disconnected()
    moonraker.print_stats.update(state="error", message="MCU shutdown")
    (entry,) = rendered(service)
    assert entry["ok"] and entry["end_state"] == "lost" and entry["frames_taken"] == 1
    moonraker.klippy_ready()
    assert moonraker.wait_subscribed()  # subscribed again once Klippy is back
    moonraker.start_print("next.gcode")  # Klipper resets print_stats for a new print
    moonraker.set_layer(1)
    wait_for(lambda: taken(service) == 1, what="the next print")


def test_the_gateway_status_shows_the_timelapse_for_its_camera(node, moonraker, make_service, zmq_context):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("cube.gcode")
    moonraker.set_layer(1)
    wait_for(lambda: taken(service) == 1, what="a frame")
    with FrameCache([node.endpoint], services=[service.status_endpoint], context=zmq_context) as cache:
        client = falcon.testing.TestClient(create_app(cache, GatewayConfig()))

        def shown():
            health = client.simulate_get("/status").json.get("0", {}).get("health", {})
            return health.get("timelapse")

        shown_now = wait_for(lambda: (s := shown()) and s["frames_taken"] == 1 and s, 10,
                             "the gateway to show the timelapse's frame")
        assert shown_now["state"] == "recording" and shown_now["print"] == "cube.gcode"
        assert shown_now["frames_skipped"] == 0 and shown_now["moonraker"] == "connected"
        assert shown_now["reporting"] is True
        moonraker.finish("complete")
        done = wait_for(lambda: (s := shown()) and s["state"] == "idle" and s["last_render"] and s,
                        20, "the render in /status")
        assert done["last_render"]["ok"] and done["last_render"]["video"].endswith(".mp4")
        assert done["renders"] == [done["last_render"]]  # what the dashboard lists


def test_moonraker_unreachable_at_start_is_retried_until_it_answers(node, make_service):
    from tests.fakes.moonraker_ws import FakeMoonrakerWS

    fake = FakeMoonrakerWS().start()
    url = fake.url
    fake.stop()  # its port, with nobody on it
    service = make_service(node.endpoint, url)
    wait_for(lambda: service.link.last_error, what="a failed connect")
    assert service.status()["cameras"]["0"]["moonraker"] == "disconnected"
    fake.start()
    try:
        assert fake.wait_subscribed(10)
        assert service.status()["cameras"]["0"]["moonraker"] == "connected"
    finally:
        fake.stop()
    assert fake.violations == []


def test_a_disk_full_mid_print_is_shown_in_the_status_and_nothing_crashes(node, moonraker, make_service,
                                                                           tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a small tmpfs to fill: {mounted.stderr.strip()}")
    try:
        service = make_service(node.endpoint, moonraker.url, output_dir=small)
        assert moonraker.wait_subscribed()
        moonraker.start_print("big.gcode")
        wait_for(lambda: taken(service) == 0, what="the print to start")
        layer = 0
        while not service.recording or not service.recording.skipped["disk"]:
            layer += 1
            assert layer < 200, "the small disk never filled"
            moonraker.set_layer(layer)
            wait_for(lambda n=layer: sum(service.recording.skipped.values()) + service.recording.taken >= n,
                     what=f"layer {layer}'s frame")
        status = service.status()["cameras"]["0"]
        assert "disk full" in status["last_error"] and status["state"] == "recording"
        moonraker.finish("complete")
        (entry,) = rendered(service)
        kept = service.frames_root / entry["print_id"]
        if not entry["ok"]:  # the video did not fit either: the frames stay, nothing half-written
            assert "kept" in service.status()["cameras"]["0"]["last_error"]
            assert len(list(kept.glob("frame_*.jpg"))) == entry["frames_taken"] > 0
            assert [n for n in output_files(service) if n.endswith(".mp4")] == []
        else:  # it fitted: every frame stored is in it
            assert video_frames(small / entry["video"]) == entry["frames_taken"]
        assert not [p for p in small.rglob("*partial*")]
        assert service.link.connected and all(t.is_alive() for t in service._threads)
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
    assert os.path.ismount(small) is False


def test_the_service_restarted_mid_print_carries_on_in_the_same_video(node, moonraker, make_service):
    first = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("long.gcode")
    for layer in (1, 2):
        moonraker.set_layer(layer)
        time.sleep(0.15)
    wait_for(lambda: taken(first) == 2, what="two frames")
    first.stop()  # killed by a restart of the unit: its frames stay on disk
    wait_for(lambda: moonraker.subscribed_clients() == 0, what="the first service to go")
    second = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    wait_for(lambda: taken(second) == 2, what="the recording carried on")
    for layer in (3, 4):
        moonraker.set_layer(layer)
        time.sleep(0.15)
    moonraker.finish("complete")
    (entry,) = rendered(second)
    assert entry["ok"] and entry["frames_taken"] == 4
    assert [f["layer"] for f in manifest(second, entry)] == [1, 2, 3, 4]
    assert video_frames(second.frames_root.parent / entry["video"]) == 4
    assert [n for n in output_files(second) if n.endswith(".mp4")] == [entry["video"]]
