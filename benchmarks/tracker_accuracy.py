"""Tracker accuracy: `/world` against the tabletop scene's ground truth, as robot code reads it.

A capture node renders the tabletop scene (boxes sliding at up to ~10.5 mm/s × `--speed`,
scene time = wall time × speed) for an overhead and a side camera; the tracker runs with its
default configuration (ArUco, one detection per camera per 2 s) and a gateway serves its world
model. After a warm-up, `GET /world` is read every `--every` seconds (0.5) for `--seconds`, and
each fresh object with a measured height is compared with where its box is at the moment of
reading (the middle of the request, on this host's clock, which the scene runs on):

- xy *at reading*: the estimate (`position_mm`, carried to the request by the gateway);
- xy *held*: the last detection (`measured_mm`), which is what `/world` answered before it
  estimated — measured in the same run, side by side;
- *inside radius*: how often the error at reading is within the reported `uncertainty_mm`;
- xy / z *at detection*: each detection (`measured_mm`) against where the box was when its
  frame was captured (`measured_at`) — what the tracker measures;
- heights measured at a sighting in a frame captured together with the side frame.

Until the side camera has measured an object's height its z is 0 and its (x, y) lacks the
parallax correction: such reads are counted apart ("no height yet") and left out.

    .venv/bin/python benchmarks/tracker_accuracy.py --label "1×" --seconds 60 [--speed 2]

Each run is stored under its label in benchmarks/tracker_accuracy.json, and the section in
docs/benchmarks.md shows every stored label. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

from camfabric import sim  # noqa: E402
from camfabric.capture_node.config import CameraConfig, NodeConfig  # noqa: E402
from camfabric.capture_node.node import CaptureNode  # noqa: E402
from camfabric.gateway.config import GatewayConfig  # noqa: E402
from camfabric.gateway.server import Gateway  # noqa: E402
from camfabric.sim import tabletop  # noqa: E402
from camfabric.sim.tracker import tabletop_tracker_config, xy_error_mm  # noqa: E402
from camfabric.subscribers.tracker.config import TrackerConfig  # noqa: E402
from camfabric.subscribers.tracker.service import Tracker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "tracker_accuracy.json"
VIEWS = {0: "overhead", 2: "side_profile"}
WARM_UP_S = 8.0
BOXES = {b.label: b for b in tabletop.BOXES}


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


def get_world(conn: http.client.HTTPConnection) -> tuple[dict, float]:
    """`/world` and the moment it stood for: the middle of the request on the wall clock."""
    t0 = time.time()
    conn.request("GET", "/world")
    response = conn.getresponse()
    body = json.loads(response.read())
    return body, (t0 + time.time()) / 2


def tracker_config(node: str, acceleration: float | None) -> TrackerConfig:
    """The demo's tracker configuration, with `acceleration_mm_s2` when given."""
    config = tabletop_tracker_config([node], "tcp://127.0.0.1:0", VIEWS)
    if acceleration is None:
        return config
    world = dataclasses.replace(config.world, acceleration_mm_s2=acceleration)
    return dataclasses.replace(config, world=world)


def measure(seconds: float, fps: float, speed: float, every_s: float = 0.5,
            acceleration: float | None = None) -> dict:
    sim.register()
    cameras = tuple(CameraConfig(id=cam, name=view, role=view, resolution=(640, 360), fps=fps,
                                 source={"kind": "tabletop", "view": view, "speed": speed})
                    for cam, view in VIEWS.items())
    now_err, held_err, inside, radii, at_detection, z_err = [], [], [], [], [], []
    no_height = reads = 0
    detections: set[tuple[str, float]] = set()
    heights: dict[tuple[str, float], bool] = {}  # (id, height_seen) -> measured at a synced sighting
    with CaptureNode(NodeConfig(name="bench", publish="tcp://127.0.0.1:0", cameras=cameras)) as node, \
            Tracker(tracker_config(node.endpoint, acceleration)) as tracker, \
            Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,), tracker=(tracker.endpoint,))) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        start = time.monotonic() + WARM_UP_S
        due = start
        while due < start + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            due += every_s
            world, t_read = get_world(conn)
            reads += 1
            for obj in world["objects"]:
                if obj["stale"] or obj["label"] not in BOXES:
                    continue
                if obj["position_mm"]["z"] == 0:
                    no_height += 1
                    continue
                err = xy_error_mm(obj["position_mm"], obj["label"], t_read, speed)
                now_err.append(err)
                held_err.append(xy_error_mm(obj["measured_mm"], obj["label"], t_read, speed))
                radii.append(obj["uncertainty_mm"])
                inside.append(err <= obj["uncertainty_mm"])
                key = (obj["id"], obj["measured_at"])
                if key not in detections:
                    detections.add(key)
                    at_detection.append(xy_error_mm(obj["measured_mm"], obj["label"],
                                                    obj["measured_at"], speed))
                    z_err.append(abs(obj["position_mm"]["z"] - BOXES[obj["label"]].height_mm))
                at = obj.get("height_at")
                heights[(obj["id"], obj["height_seen"])] = bool(at and at.get("synced"))
        conn.close()

    def stats(values: list[float]) -> dict:
        if not values:
            return {"mean": None, "p95": None, "max": None}
        ordered = sorted(values)
        return {"mean": round(statistics.fmean(values), 2),
                "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2), "max": round(ordered[-1], 2)}

    return {"seconds": seconds, "speed": speed, "every_s": every_s, "reads": reads,
            "acceleration_mm_s2": acceleration,
            "samples": len(now_err), "no_height": no_height, "ids": len({k[0] for k in detections}),
            "xy_read_mm": stats(now_err), "xy_held_mm": stats(held_err),
            "inside_radius": round(sum(inside) / len(inside), 3) if inside else None,
            "radius_mm": stats(radii), "xy_detection_mm": stats(at_detection),
            "detections": len(at_detection),
            "z_mm": stats(z_err), "heights": len(heights), "heights_synced": sum(heights.values())}


def render(runs: dict) -> str:
    read = {k: r for k, r in runs.items() if "xy_read_mm" in r}
    older = {k: r for k, r in runs.items() if "xy_read_mm" not in r}
    lines = ["## Tracker accuracy (`benchmarks/tracker_accuracy.py`)", "",
             "`GET /world` read every 0.5 s against the tabletop scene's ground truth at the moment "
             "of reading, ArUco, default tracker settings (one detection per camera per 2 s), "
             "cameras at 10 fps, boxes moving at up to ~10.5 mm/s × the scene speed; node, tracker "
             "and gateway in one process. *At reading*: the estimate `/world` answers; *held*: the "
             "last detection (`measured_mm`), what `/world` answered before it estimated, in the "
             "same run; *inside radius*: reads whose error is within the reported "
             "`uncertainty_mm`; *at detection*: each detection against the truth when its frame "
             "was captured.", "",
             "| run | when / machine | duration | speed | xy at reading mean / p95 / max (mm) "
             "| xy held mean / p95 / max (mm) | inside radius | radius mean (mm) "
             "| xy at detection mean / p95 / max (mm) | z mean / max (mm) | heights synced "
             "| object ids | samples / no height yet |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def triple(s: dict) -> str:
        return f"{s['mean']} / {s['p95']} / {s['max']}"

    for label, r in read.items():
        lines.append(f"| {label} | {r['when']}, {r['machine']} | {r['seconds']:g} s | {r['speed']:g}× "
                     f"| {triple(r['xy_read_mm'])} | {triple(r['xy_held_mm'])} "
                     f"| {100 * r['inside_radius']:.0f} % | {r['radius_mm']['mean']} "
                     f"| {triple(r['xy_detection_mm'])} | {r['z_mm']['mean']} / {r['z_mm']['max']} "
                     f"| {r['heights_synced']} / {r['heights']} | {r['ids']} "
                     f"| {r['samples']} / {r['no_height']} |")
    lines += ["", "Aim (1×): xy at reading mean ≤ 2 mm, p95 ≤ 5 mm, the error at detection "
              "unchanged (0.3 mm mean, as at the stamp in the earlier runs below). The estimate "
              "is a constant-velocity Kalman filter per object (`subscribers/tracker/motion.py`); "
              "what is left at 2× is the boxes' acceleration (4× the 1× figure) over up to 2.3 s "
              "since the last detection: a constant-velocity model lags a sinusoid by about the "
              "acceleration × (t + t²/2). With `--acceleration 2` (`tracker.world.acceleration_mm_s2`, "
              "default 0.5) the filter expects the 2× boxes' accelerations (up to 4.4 mm/s²): "
              "a smaller error and a radius that holds it."]
    if older:
        lines += ["", "Earlier runs, read from the `world` topic (every message), before the "
                  "estimate: *at stamp* is the position against the truth at its capture time, "
                  "*now* against the truth when the message was read.", "",
                  "| run | when / machine | duration | speed | xy at stamp mean / p95 / max (mm) "
                  "| z mean / p95 / max (mm) | heights synced | xy now mean / max (mm) "
                  "| update latency mean / max (s) | object ids | samples / no height yet |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in older.items():
            xy, z, now, lat = r["xy_mm"], r["z_mm"], r["xy_now_mm"], r["latency_s"]
            synced = f"{r['heights_synced']} / {r['heights']}" if "heights" in r else "–"
            lines.append(f"| {label} | {r['when']}, {r['machine']} | {r['seconds']:g} s "
                         f"| {r.get('speed', 1.0):g}× | {triple(xy)} | {triple(z)} | {synced} "
                         f"| {now['mean']} / {now['max']} | {lat['mean']} / {lat['max']} | {r['ids']} "
                         f"| {r['samples']} / {r.get('no_height', '–')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="name of this run in the table")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=1.0, help="scene time per wall second")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two reads of /world")
    parser.add_argument("--acceleration", type=float, default=None,
                        help="tracker.world.acceleration_mm_s2 (default: the tracker's default)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs from stored runs")
    args = parser.parse_args()
    if args.render:
        write_section("tracker_accuracy", render(json.loads(RESULTS.read_text())))
        return 0
    result = measure(args.seconds, args.fps, args.speed, args.every, args.acceleration)
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
