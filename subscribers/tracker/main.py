"""`camfabric tracker`: the rate-limited location tracker as a process."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from ...runtime.process import stop_event
from .config import load_tracker_config
from .service import Tracker

HELP = "track objects on the workspace (ArUco or Gemini) and publish the world model"
DESCRIPTION = """\
Subscribes to the configured cameras, detects each camera's newest frame at most once per
interval (default 2 s; at least 2 s for Gemini), with the gate taken when the request leaves,
within a Gemini budget shared by the host's trackers (requests spread evenly over the minute,
the day's count, pauses that survive a restart); turns detections into workspace millimetres
(overhead: table homography; side_profile: heights; end_effector: kept in its own frame) and
publishes the world model on tcp://127.0.0.1:5560 (topic `world`, plus `status/tracker/`).

Example:

    [tracker]
    nodes = ["tcp://127.0.0.1:5550"]
    markers = { "20" = "red_block", "21" = "green_block" }

    [[tracker.cameras]]
    id = 0
    role = "overhead"
    references = { "0" = [30, 30], "1" = [370, 30], "2" = [370, 270], "3" = [30, 270] }

    [[tracker.cameras]]
    id = 1
    role = "end_effector"
    detector = "gemini"             # key from GEMINI_API_KEY (tracker.gemini.api_key_env)
    interval_s = 6.0                # the default budget: 10 requests a minute, 20 a day

See docs/tracker.md for calibration, the Gemini budget and every key.
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--publish", metavar="ENDPOINT", help="override tracker.publish")


def run(args: argparse.Namespace) -> int:
    config = load_tracker_config(args.config)
    if getattr(args, "publish", None):
        config = dataclasses.replace(config, publish=args.publish)
    stop = stop_event()
    tracker = Tracker(config)
    tracker.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        tracker.stop()
    log.info("tracker stopped")
    return 0
