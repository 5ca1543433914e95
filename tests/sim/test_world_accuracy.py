"""`GET /world` on the demo's tabletop, read as robot code reads it: every 0.5 s, against where
the boxes are at the moment of reading. A short window and a looser bound than the benchmark's
(benchmarks/tracker_accuracy.py: mean ≤ 2 mm, p95 ≤ 5 mm over 60 s): boxes moving up to
~10.5 mm/s, detected once per 2 s, were ~6 mm off on average (15 mm p95) when `/world` gave the
last detection; carried on along their velocity they are within a few millimetres."""

from __future__ import annotations

import http.client
import json
import statistics
import time

from camfabric.capture_node.config import NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.sim.tracker import start_demo_tracker, tabletop_cameras, xy_error_mm

READS = 16
EVERY_S = 0.5


def _ready(model: dict) -> bool:
    """Every box has a velocity (two detections), and two of them a height (parallax corrected).

    Not all three: in the side camera's view the front box hides the others' front markers for
    long stretches, so when the first height of every box comes depends on where in its
    cycle the scene (which runs on the wall clock) happens to be when the test starts. Measured
    over the scene's 15-minute cycle, start by start: two boxes seen from the side within 17 s
    at worst; all three within 45 s for only 90 % of the starts, 74 s at worst (a 45 s wait
    for all three failed a CI run)."""
    objects = [o for o in model["objects"] if not o["stale"]]
    return (len(objects) == 3 and all(o["observations"] >= 2 for o in objects)
            and sum(o["position_mm"]["z"] > 0 for o in objects) >= 2)


def test_world_read_every_half_second_is_where_the_boxes_are_then(zmq_context):
    cameras = tuple(c for c in tabletop_cameras(640, 360, fps=10) if c.role != "end_effector")
    node = CaptureNode(NodeConfig(name="demo", publish="tcp://127.0.0.1:0", cameras=cameras),
                       zmq_context).start()
    try:
        with start_demo_tracker(node.endpoint, "tcp://127.0.0.1:0", context=zmq_context) as tracker, \
                Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,), tracker=(tracker.endpoint,)),
                        context=zmq_context) as gateway:
            conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)

            def read() -> tuple[dict, float]:
                t0 = time.time()
                conn.request("GET", "/world")
                body = json.loads(conn.getresponse().read())
                return body, (t0 + time.time()) / 2  # the scene runs on this host's wall clock

            # Two detections per box (velocity) and synced side views (heights), at one turn per
            # 2.25 s (the paid-API margin): within seconds here, slower on a loaded machine.
            deadline = time.monotonic() + 45.0
            while not _ready(read()[0]):
                assert time.monotonic() < deadline, f"the boxes never got velocities and heights: {read()[0]}"
                time.sleep(0.2)
            errors, held = [], []
            for _ in range(READS):
                time.sleep(EVERY_S)
                model, t = read()
                for obj in model["objects"]:
                    if obj["stale"] or obj["position_mm"]["z"] == 0:
                        continue
                    errors.append(xy_error_mm(obj["position_mm"], obj["label"], t))
                    held.append(xy_error_mm(obj["measured_mm"], obj["label"], t))
            conn.close()
    finally:
        node.stop()
    assert len(errors) >= 2 * READS
    ordered = sorted(errors)
    mean, p95 = statistics.fmean(errors), ordered[int(0.95 * (len(ordered) - 1))]
    assert mean <= 3.0 and p95 <= 8.0, (mean, p95, statistics.fmean(held))
