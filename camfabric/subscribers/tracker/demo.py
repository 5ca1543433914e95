"""The tracker's part in `camfabric demo`: tabletop cameras and a tracker calibrated for them.

    cameras = tabletop_cameras(640, 360, 15)          # the seed's three cameras, tabletop scene
    with CaptureNode(NodeConfig(cameras=cameras)) as node, \\
            start_demo_tracker(node.endpoint, "tcp://127.0.0.1:5560"):
        ...                                            # /world shows the boxes moving

The scene's boxes carry ArUco markers, so the demo needs no Gemini key.
"""

from __future__ import annotations

import dataclasses

import zmq

from ...capture_node.config import CameraConfig, demo_cameras
from .config import DEFAULT_PUBLISH, tabletop_tracker_config
from .service import Tracker

VIEWS = {"overhead": "overhead", "end_effector": "end_effector", "side_profile": "side_profile"}


def tabletop_cameras(width: int = 640, height: int = 360, fps: float = 15) -> tuple[CameraConfig, ...]:
    """The seed registry's three cameras (0 overhead, 1 end_effector, 2 side_profile), each
    showing its view of the tabletop scene."""
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
