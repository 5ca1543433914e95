"""`camfabric gateway`: serve the fabric's cameras over HTTP."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from ..runtime.process import stop_event
from .config import load_gateway_config
from .server import plan_workers, serve

HELP = "serve every camera on the fabric over HTTP (JPEG, MJPEG, JSON, dashboard)"

DESCRIPTION = """\
Subscribe to the fabric and serve the camera HTTP API: /cameras, /snap/{id}, /latest/{id},
/cam/{id} (MJPEG), /status, /frame/{id}?format=jpeg|raw, /world, /scan, /snapshot.jpg,
/stream.mjpg, /?action=snapshot|stream[&cam=N], Prometheus metrics at /metrics and a live
dashboard at /.

Every key is optional; the defaults are shown:

  [gateway]
  host = "127.0.0.1"         # off loopback, only allow_from networks are answered (403 else)
  port = 8081
  subscribe = ["tcp://127.0.0.1:5550"]   # nodes or proxies: the only source of cameras
  # tracker = ["tcp://127.0.0.1:5560"]   # `world` (and the tracker's status) only from here;
                                         # none by default: /world stays empty
  # services = ["tcp://127.0.0.1:5561"]  # services' status (the uploader's) only from here;
                                         # none by default
  # owners = { "0" = "cell" }            # the node that serves camera 0, whoever else claims it
  max_cameras = 256                      # cameras kept in all (64 per node); more are ignored
  snap_timeout_s = 2.0       # /snap and /frame wait this long for a fresh frame
  max_streams = 200          # concurrent MJPEG clients (503 beyond), over all workers
  # threads = 208            # request threads per worker; default max_streams + 8
  workers = 0                # processes sharing the port, each with its own subscriber;
                             # 0: one per CPU it may use, minus one when node_on_host
  # node_on_host = true      # a capture node runs here; default: a subscribe endpoint is local
  # pin_cpus = true          # each worker's threads on one CPU (default where 2+ CPUs)
  allow_from = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"]
  default_camera = 0         # /snapshot.jpg, /stream.mjpg and /?action=… without cam=
  heartbeat_timeout_s = 3.0  # a camera without heartbeat this long is disconnected
  stale_after_s = 5.0        # snapshot routes answer 503 when the newest frame is older
  idle_s = 10.0              # a camera's JPEG stays subscribed this long after its last
                             # request (a stream keeps it while open); then the node stops
                             # encoding it
  ice_servers = []           # WebRTC: STUN/TURN URLs for viewers off the LAN; none: host
                             # candidates only, which needs no internet

  # CURVE keys for an endpoint off loopback (one table per endpoint):
  # [gateway.curve."tcp://10.0.0.5:5550"]
  # secret_key_file = "/etc/camfabric/gateway.key_secret"
  # server_public_key_file = "/etc/camfabric/node-a.key"
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="HTTP port, overriding gateway.port")


def run(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.config)
    if args.port is not None:
        config = dataclasses.replace(config, port=args.port)
    stop = stop_event()

    def ready(url: str) -> None:
        workers = plan_workers(config)[0]
        print(f"camfabric gateway: {url}{f' ({workers} workers)' if workers > 1 else ''}", flush=True)

    serve(config, stop, log_level=args.log_level, on_ready=ready)
    log.info("gateway stopped")
    return 0
