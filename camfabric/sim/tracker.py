"""The tracker's part in `camfabric demo`: tabletop cameras and a tracker calibrated for them.

    cameras = tabletop_cameras(640, 360, 15)          # the seed's three cameras, tabletop scene
    with CaptureNode(NodeConfig(cameras=cameras)) as node, \\
            start_demo_tracker(node.endpoint, "tcp://127.0.0.1:5560"):
        ...                                            # /world shows the boxes moving

The scene's boxes carry ArUco markers, so the demo needs no Gemini key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import zmq

from camfabric.capture_node.config import CameraConfig, demo_cameras
from camfabric.protocol import DEFAULT_ENDPOINT
from camfabric.subscribers.tracker.config import DEFAULT_PUBLISH, CameraTracking, TrackerConfig
from camfabric.subscribers.tracker.service import Tracker

from . import register, tabletop

VIEWS = {"overhead": "overhead", "end_effector": "end_effector", "side_profile": "side_profile"}


def tabletop_cameras(width: int = 640, height: int = 360, fps: float = 15) -> tuple[CameraConfig, ...]:
    """The seed registry's three cameras (0 overhead, 1 end_effector, 2 side_profile), each
    showing its view of the tabletop scene (registered as a source kind on the way)."""
    register()
    return tuple(
        dataclasses.replace(camera, source={"kind": "tabletop", "view": VIEWS[camera.role]})
        for camera in demo_cameras(width=width, height=height, fps=fps)
    )


def start_demo_tracker(node_endpoint: str, publish: str = DEFAULT_PUBLISH, *,
                       context: zmq.Context | None = None, interval_s: float = 2.0) -> Tracker:
    """A started tracker for the tabletop cameras of `tabletop_cameras()` on `node_endpoint`;
    stop it with `.stop()` or use it as a context manager."""
    views = {camera.id: VIEWS[camera.role] for camera in demo_cameras()}
    config = tabletop_tracker_config([node_endpoint], publish, views, interval_s=interval_s)
    return Tracker(config, context=context).start()


def tabletop_tracker_config(
    nodes: list[str] | None = None,
    publish: str = DEFAULT_PUBLISH,
    cameras: Mapping[int, str] | None = None,
    *,
    width: int = 640,
    height: int = 360,
    interval_s: float = 2.0,
) -> TrackerConfig:
    """A tracker configuration calibrated for the `tabletop` source's scene.

    `cameras` maps camera id -> tabletop view (default: the seed's cameras 0 overhead,
    1 end_effector, 2 side_profile); `width`/`height` are the cameras' resolution.
    """
    views = dict(cameras or {0: "overhead", 1: "end_effector", 2: "side_profile"})
    tracked = []
    for cam, view_name in sorted(views.items()):
        if view_name == "overhead":
            view = tabletop.make_view("overhead", width, height)
            refs = {str(i): [p[0], p[1]] for i, p in tabletop.TABLE_REFERENCES.items()}
            tracked.append(CameraTracking(id=cam, role="overhead", interval_s=interval_s, references=refs,
                                          camera_position_mm=list(view.position)))
        elif view_name == "side_profile":
            refs = {str(i): list(p) for i, p in {**tabletop.TABLE_REFERENCES,
                                                  **tabletop.SIDE_REFERENCES}.items()}
            offset = tabletop.FRONT_TAG_TOP_MM + tabletop.FRONT_TAG_MM / 2
            tracked.append(CameraTracking(id=cam, role="side_profile", interval_s=interval_s,
                                          references=refs, marker_top_offset_mm=offset))
        else:
            tracked.append(CameraTracking(id=cam, role="end_effector", interval_s=interval_s))
    return TrackerConfig(nodes=list(nodes or [DEFAULT_ENDPOINT]), publish=publish,
                         aruco_dictionary=tabletop.ARUCO_DICTIONARY, markers=dict(tabletop.MARKER_LABELS),
                         cameras=tuple(tracked))


def xy_error_mm(position: Mapping[str, Any], label: str, t_wall_s: float, speed: float = 1.0) -> float | None:
    """How far `position` ({"x", "y"} mm) lies from the tabletop box `label` at wall-clock time
    `t_wall_s` of a scene running at `speed` (None: no such box)."""
    box = next((b for b in tabletop.BOXES if b.label == label), None)
    if box is None:
        return None
    x, y, _ = tabletop.box_pose(box, tabletop.scene_time(int(t_wall_s * 1e9), speed))
    return math.hypot(float(position["x"]) - x, float(position["y"]) - y)
