"""`camfabric timelapse`: print timelapses from the fabric, driven by Moonraker."""

from __future__ import annotations

import argparse
import logging

from ...runtime.errors import ConfigError
from ...runtime.process import stop_event
from .config import load_timelapse_config
from .render import have_pyav
from .service import TimelapseService

HELP = "record print timelapses: a frame per layer (or every N s) from Moonraker's print state"

DESCRIPTION = """\
Follows the printer through Moonraker's websocket (print_stats: state and
info.current_layer, and the TIMELAPSE_TAKE_FRAME macro's line) and, for each trigger, takes
the first frame the camera *captured* settle_s after it — subscribed only around each
trigger, so the node encodes nothing in between. When the print ends it renders an MP4
(H.264 with PyAV installed, else OpenCV's mp4v; codec = "vp9" for browsers without PyAV)
and a preview JPEG into output_dir, where
Mainsail and Fluidd list timelapses; both appear under their final names only when complete.
A frame not captured within frame_timeout_s is skipped and counted; Moonraker going away is
retried with backoff. State is published as status/timelapse/ on `publish`, which the
gateway shows under /status when its `services` list that endpoint.

Example config (TOML):

  [timelapse]
  nodes = ["tcp://127.0.0.1:5550"]         # fabric endpoints
  moonraker = "http://127.0.0.1:7125"      # API key, if it wants one: $MOONRAKER_API_KEY
  camera = 0
  mode = "layer"                           # or "hyperlapse" with interval_s
  settle_s = 0.5                           # after the trigger, for the park move
  fps = 30                                 # or target_length_s = 10 (min_fps..max_fps)
  duplicate_last_s = 2                     # hold the finished print at the end
  output_dir = "~/printer_data/timelapse"  # the default

For frames on the macro rather than on each layer change, add to printer.cfg:

  [gcode_macro TIMELAPSE_TAKE_FRAME]
  gcode:
    {action_respond_info("CAMFABRIC_TIMELAPSE_FRAME")}

See docs/timelapse.md for every key.
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="validate the config (and the API key's transport) and exit")


def run(args: argparse.Namespace) -> int:
    config = load_timelapse_config(args.config)
    config.api_key()  # a key that would travel in clear is a configuration error, now
    if args.check:
        encoder = config.codec if config.codec != "auto" else ("h264" if have_pyav() else "mp4v")
        if encoder == "h264" and not have_pyav():
            raise ConfigError("timelapse.codec", "\"h264\" needs PyAV: pip install 'camfabric[timelapse]'")
        print(f"{args.config}: [timelapse] is valid (camera {config.camera}, {config.mode} mode, "
              f"{encoder}, into {config.output_dir})")
        return 0
    stop = stop_event()
    service = TimelapseService(config).start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        service.stop()
    log.info("timelapse stopped")
    return 0
