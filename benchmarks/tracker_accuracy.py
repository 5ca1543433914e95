"""Tracker accuracy: `/world` positions against the tabletop scene's ground truth.

A capture node renders the tabletop scene (boxes sliding at up to ~10 mm/s × `--speed`, scene
time = wall time × speed) for an overhead and a side camera; the tracker runs with its default
configuration (ArUco, one detection per camera per 2 s) and publishes the world; a Subscriber
reads every `world` message for `--seconds`. For every object in every message:

- xy / z error at the position's own stamp (`last_seen`: when the frame it came from was captured),
  against where the box really was then — what the tracker claims;
- xy error "now": against where the box is when the message is read — what a user acting on the
  position gets (includes the detection interval: the box moves between detections);
- update latency: from a position's stamp to the first message that carries it;
- z error, and how each height was measured: at the overhead sighting of a frame captured
  together with the side frame (`height_at.synced`) or at an interpolated place.

Until the side camera has measured an object's height (a box can be hidden behind another from
the side for a while), its z is 0 and its (x, y) lacks the parallax correction: such samples
are counted apart ("no height yet") and left out of the error figures.

    .venv/bin/python benchmarks/tracker_accuracy.py --label after --seconds 180 [--speed 4]

Each run is stored under its label in benchmarks/tracker_accuracy.json, and the section in
docs/benchmarks.md shows every stored label side by side. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

from camfabric import sim  # noqa: E402
from camfabric.capture_node.config import CameraConfig, NodeConfig  # noqa: E402
from camfabric.capture_node.node import CaptureNode  # noqa: E402
from camfabric.protocol import Subscriber, topics  # noqa: E402
from camfabric.sim import tabletop  # noqa: E402
from camfabric.sim.tracker import tabletop_tracker_config  # noqa: E402
from camfabric.subscribers.tracker.service import Tracker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "tracker_accuracy.json"
VIEWS = {0: "overhead", 2: "side_profile"}
WARM_UP_S = 8.0
BOXES = {b.label: b for b in tabletop.BOXES}


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (OSError, ValueError):
        mem = float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def truth_xy(label: str, t_wall: float, speed: float) -> tuple[float, float]:
    x, y, _ = tabletop.box_pose(BOXES[label], tabletop.scene_time(int(t_wall * 1e9), speed))
    return x, y


def measure(seconds: float, fps: float, speed: float) -> dict:
    sim.register()
    node_ep = f"tcp://127.0.0.1:{unused_port()}"
    world_ep = f"tcp://127.0.0.1:{unused_port()}"
    cameras = tuple(CameraConfig(id=cam, name=view, role=view, resolution=(640, 360), fps=fps,
                                 source={"kind": "tabletop", "view": view, "speed": speed})
                    for cam, view in VIEWS.items())
    config = tabletop_tracker_config([node_ep], world_ep, VIEWS)
    xy_err, z_err, now_err, latency = [], [], [], []
    no_height = 0
    seen: set[tuple[str, float]] = set()
    heights: dict[tuple[str, float], bool] = {}  # (id, height_seen) -> measured at a synced sighting
    messages = 0
    with CaptureNode(NodeConfig(name="bench", publish=node_ep, cameras=cameras)), \
            Tracker(config), Subscriber(world_ep, cameras=[], topics_extra=[topics.world()]) as sub:
        start = time.monotonic()
        last = None
        while time.monotonic() - start < seconds:
            time.sleep(0.02)
            world = sub.message(topics.world())
            if world is None or world is last:
                continue
            last = world
            now = time.time()
            if time.monotonic() - start < WARM_UP_S:
                continue
            messages += 1
            for obj in world.model["objects"]:
                if obj["stale"] or obj["label"] not in BOXES:
                    continue
                if obj["position_mm"]["z"] == 0:
                    no_height += 1
                    continue
                stamp = float(obj["last_seen"])
                p = obj["position_mm"]
                tx, ty = truth_xy(obj["label"], stamp, speed)
                nx, ny = truth_xy(obj["label"], now, speed)
                xy_err.append(math.hypot(p["x"] - tx, p["y"] - ty))
                now_err.append(math.hypot(p["x"] - nx, p["y"] - ny))
                z_err.append(abs(p["z"] - BOXES[obj["label"]].height_mm))
                at = obj.get("height_at")  # absent before heights were measured at pairs
                heights[(obj["id"], obj["height_seen"])] = bool(at and at.get("synced"))
                key = (obj["id"], stamp)
                if key not in seen:
                    seen.add(key)
                    latency.append(now - stamp)
    ids = {k[0] for k in seen}

    def stats(values: list[float]) -> dict:
        if not values:
            return {"mean": None, "p95": None, "max": None}
        ordered = sorted(values)
        return {"mean": round(statistics.fmean(values), 2),
                "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2), "max": round(ordered[-1], 2)}

    return {"seconds": seconds, "speed": speed, "heights": len(heights),
            "heights_synced": sum(heights.values()), "messages": messages, "samples": len(xy_err),
            "ids": len(ids),
            "xy_mm": stats(xy_err), "z_mm": stats(z_err), "xy_now_mm": stats(now_err),
            "latency_s": stats(latency), "updates": len(latency), "no_height": no_height}


def render(runs: dict) -> str:
    lines = ["## Tracker accuracy (`benchmarks/tracker_accuracy.py`)", "",
             "`/world` against the tabletop scene's ground truth, ArUco, default tracker settings "
             "(one detection per camera per 2 s), cameras at 10 fps, boxes moving at up to ~10 mm/s "
             "× the scene speed. *At stamp*: "
             "error against where the box was when the frame was captured; *now*: against where "
             "it is when the message is read (includes the 2 s between detections); latency: "
             "from capture to the first world message carrying the position.", "",
             "| run | when / machine | duration | speed | xy mean / p95 / max (mm) "
             "| z mean / p95 / max (mm) | heights synced | xy now mean / max (mm) "
             "| update latency mean / max (s) | object ids | samples / no height yet |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in runs.items():
        xy, z, now, lat = r["xy_mm"], r["z_mm"], r["xy_now_mm"], r["latency_s"]
        synced = f"{r['heights_synced']} / {r['heights']}" if "heights" in r else "–"
        lines.append(f"| {label} | {r['when']}, {r['machine']} | {r['seconds']:g} s "
                     f"| {r.get('speed', 1.0):g}× | {xy['mean']} / {xy['p95']} / {xy['max']} "
                     f"| {z['mean']} / {z['p95']} / {z['max']} | {synced} "
                     f"| {now['mean']} / {now['max']} | {lat['mean']} / {lat['max']} | {r['ids']} "
                     f"| {r['samples']} / {r.get('no_height', '–')} |")
    lines += ["", "Aim: mean xy error ≤ 2 mm and max ≤ 8 mm at the stamp with the boxes moving. "
              "*Before*, smoothing was a weight of 0.6 per update (~1.5 s of lag at one update per "
              "2 s) and `last_seen` was the time a position was computed, so its latency column "
              "leaves out capture → detection; *after*, smoothing is a 0.25 s time constant and "
              "`last_seen` is the frame's capture time. The *now* column is what the 2 s interval "
              "costs a user acting on a moving box (up to ~10 mm/s × the time since capture).", "",
              "*Interpolated heights* / *synced pairs* (shorter runs, `--seconds 90`, at scene speed "
              "1× and 4×): before, the side camera's height was measured at the overhead positions "
              "interpolated to the side frame's capture time; after, at the overhead sighting in a "
              "frame captured together with the side frame (`Subscriber.synced`, within 50 ms at "
              "10 fps); *heights synced* counts distinct heights measured so, of all. Every height "
              "came from a pair, and z error did not change beyond run-to-run noise (mean "
              "0.93–1.05 mm, max ≤ 1.77 mm in all four runs): the scene's boxes slide along x, "
              "across the side camera's view, and at most ±3 mm in depth, so the interpolated places "
              "were already close enough for this camera's geometry; the pair removes the "
              "interpolation's guess, which matters for a box that turns or stops between overhead "
              "sightings. Object ids > 3 at 4×: boxes moving ~80 mm "
"between 2 s detections exceed `match_distance_mm` near the lane's centre."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="name of this run in the table")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=1.0, help="scene time per wall second")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs from stored runs")
    args = parser.parse_args()
    if args.render:
        write_section("tracker_accuracy", render(json.loads(RESULTS.read_text())))
        return 0
    result = measure(args.seconds, args.fps, args.speed)
    result["when"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = machine()
    print(json.dumps(result, indent=2))
    if not args.no_write:
        runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        runs[args.label] = result
        RESULTS.write_text(json.dumps(runs, indent=2) + "\n")
        write_section("tracker_accuracy", render(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
