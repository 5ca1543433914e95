"""A simulated print against a real capture node: the fake Moonraker reports 20 layers, the
timelapse takes one frame per layer — each captured after its layer's trigger + settle_s, by the
frames' own capture times — and renders an MP4 that decodes to 20 frames, with its preview."""

from __future__ import annotations

import time

import cv2

from .conftest import SETTLE_S, manifest, output_files, rendered, taken, video_frames, wait_for


def test_a_20_layer_print_gives_20_frames_each_captured_after_its_layer_settled(node, moonraker,
                                                                               make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("benchy.gcode", total_layers=20)
    sent = {}
    for layer in range(1, 21):
        sent[layer] = moonraker.set_layer(layer)
        time.sleep(0.15)
    moonraker.finish("complete")
    (entry,) = rendered(service)

    assert entry["ok"], entry
    assert (entry["frames_taken"], entry["frames_skipped"], entry["end_state"]) == (20, 0, "complete")
    frames = manifest(service, entry)
    assert [f["layer"] for f in frames] == list(range(1, 21))
    for f in frames:
        # on the node's clock (this host's): captured after the layer change left Moonraker + settle
        assert f["t_capture_ns"] >= sent[f["layer"]] + SETTLE_S * 1e9, f
        # on the service's clock: after the trigger it received + settle
        assert f["captured_mono_ns"] > f["trigger_mono_ns"] + SETTLE_S * 1e9, f
    # in capture order; one capture may serve two layers when the camera delivered nothing
    # between them (a loaded machine): it is still the first captured after each one's moment
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs)

    video = service.frames_root.parent / entry["video"]
    assert video_frames(video) == 20
    preview = cv2.imread(str(service.frames_root.parent / entry["preview"]))
    assert preview is not None and preview.shape[:2] == (120, 160)
    assert output_files(service) == sorted([entry["video"], entry["preview"]])  # nothing half-written
    assert entry["video"].startswith("timelapse_benchy_") and entry["video"].endswith(".mp4")
    assert not (service.frames_root / entry["print_id"]).exists()  # the JPEGs went after the render
    assert moonraker.identified[0]["client_name"] == "camfabric-timelapse"


def test_hyperlapse_takes_a_frame_every_interval_while_printing(node, moonraker, make_service):
    service = make_service(node.endpoint, moonraker.url, mode="hyperlapse", interval_s=0.25,
                           duplicate_last_s=0.5)
    assert moonraker.wait_subscribed()
    started = moonraker.start_print("vase.gcode")
    for layer in range(1, 4):  # layer changes are no triggers in hyperlapse mode
        moonraker.set_layer(layer)
        time.sleep(0.6)
    moonraker.finish("complete")
    (entry,) = rendered(service)

    frames = manifest(service, entry)
    taken = entry["frames_taken"]
    assert entry["ok"] and taken == len(frames) and taken >= 4, entry
    assert taken + entry["frames_skipped"] == service.totals["triggers"]
    triggers = [f["trigger_mono_ns"] for f in frames]
    # one frame per interval: the k-th never before k intervals after the first, never a burst
    assert all(t - triggers[0] >= k * 0.25e9 - 1e6 for k, t in enumerate(triggers)), triggers
    for f in frames:
        assert f["reason"] == "interval"
        assert f["t_capture_ns"] >= started + SETTLE_S * 1e9
        assert f["captured_mono_ns"] > f["trigger_mono_ns"] + SETTLE_S * 1e9
    video = service.frames_root.parent / entry["video"]
    # duplicate_last_s = 0.5 at 10 fps: five more of the last frame
    assert video_frames(video) == taken + 5 == entry["video_frames"]
    assert (service.frames_root.parent / entry["preview"]).is_file()


def test_the_node_encodes_nothing_for_the_timelapse_between_triggers(node, moonraker, make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("cube.gcode")
    moonraker.set_layer(1)
    wait_for(lambda: taken(service) == 1, what="a frame")
    # Released right after the frame: nobody left on the camera's jpeg topic.
    wait_for(lambda: not service.subscriber.subscribed(), 5.0, "the subscription to be released")
    moonraker.finish("cancelled")
    (entry,) = rendered(service)
    assert entry["end_state"] == "cancelled" and entry["ok"]
