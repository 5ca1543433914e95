"""`camfabric node`: run a capture node until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging

from ..runtime.errors import ConfigError
from ..runtime.process import stop_event
from .config import NodeConfig, demo_cameras, load_node_config, replace
from .node import CaptureNode

log = logging.getLogger("camfabric.node")

HELP = "run a capture node: own the cameras, publish them on the fabric"

DESCRIPTION = """\
Run a capture node: the one process that opens its cameras. It publishes each camera's
frames on a ZeroMQ XPUB endpoint (JPEG only while someone subscribes to it, raw bgr8/gray8
only while someone wants them), a heartbeat per camera every second, and a startup scan.
Without --config it runs the demo set-up: three synthetic cameras (Overhead, Arm-mounted,
Side) at 640x360, 15 fps, on tcp://127.0.0.1:5550.

Example configuration (TOML):

  [node]
  name = "cell"
  publish = "tcp://127.0.0.1:5550"   # beyond loopback needs [node.curve] or insecure = true
  jpeg_quality = 80
  heartbeat_s = 1.0

  [[node.cameras]]
  id = 0
  name = "Overhead"
  role = "overhead"
  mount = "fixed"
  device = "/dev/video0"
  resolution = [1920, 1080]
  fps = 15
  fov_deg = 78
  rotation = 0                      # 0, 90, 180, 270 (clockwise)
  flip = "none"                     # none, horizontal, vertical, both
  [node.cameras.source]
  kind = "synthetic"                # synthetic, v4l2, rpicam, mjpeg_url, file

  # [node.curve]                    # keys made with `camfabric keys`
  # secret_key_file = "/etc/camfabric/keys/cell.key_secret"
  # authorized_keys_dir = "/etc/camfabric/authorized"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--publish", metavar="ENDPOINT",
                        help="publish on this endpoint instead of the configured one")


def run(args: argparse.Namespace) -> int:
    if args.config:
        config = load_node_config(args.config)
        if not config.cameras:
            raise ConfigError("node.cameras", f"{args.config} configures no camera; add a "
                              "[[node.cameras]] table (see `camfabric node --help`)")
    else:
        config = NodeConfig(cameras=demo_cameras())
        log.info("no --config given: running the demo set-up, three synthetic cameras at "
                 "640x360, 15 fps")
    if args.publish:
        config = replace(config, publish=args.publish)
    stop = stop_event()
    with CaptureNode(config) as node:
        for camera in config.cameras:
            w, h = camera.output_size
            log.info("camera %d %r (%s, %s) %dx%d at %g fps", camera.id, camera.name, camera.kind,
                     camera.device or node.sources[camera.id].device, w, h, camera.fps)
        log.info("node %s ready on %s", config.name, node.endpoint)
        while not stop.wait(0.5):
            pass
    return 0
