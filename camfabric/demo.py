"""`camfabric demo`: the whole fabric on loopback with synthetic cameras, in one process.

A capture node with the robot cell's three cameras (overhead, end_effector, side_profile),
the gateway on 127.0.0.1:8081 and — when its part is installed — the location tracker, all on
their default endpoints. It prints the URL once the first frame is served, and stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
from contextlib import ExitStack
from dataclasses import dataclass

import zmq

from camfabric.capture_node.config import NodeConfig, demo_cameras
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.protocol import DEFAULT_ENDPOINT, FrameTimeout, Subscriber
from camfabric.runtime.config import bounded, load_section
from camfabric.runtime.errors import CamfabricError, ConfigError
from camfabric.runtime.process import stop_event

HELP = "run three synthetic cameras, the gateway and the tracker on loopback"
DESCRIPTION = """\
Run the whole fabric on this machine with synthetic cameras: a capture node with the robot
cell's three cameras (0 overhead, 1 end_effector, 2 side_profile), the HTTP gateway and the
location tracker. Everything binds 127.0.0.1, on the ports --port, --node-port and
--tracker-port choose. Open the printed URL for the dashboard; Ctrl-C stops everything.

Optional configuration (camfabric.toml):

    [demo]
    port = 8081          # gateway HTTP port
    publish = "tcp://127.0.0.1:5550"
    tracker_publish = "tcp://127.0.0.1:5560"
    width = 640
    height = 360
    fps = 15
    tracker = true
"""

log = logging.getLogger(__name__)
TRACKER_ENDPOINT = "tcp://127.0.0.1:5560"


@dataclass(frozen=True)
class DemoConfig:
    """The `[demo]` section."""

    port: int = bounded(8081, 0, 65535)
    publish: str = DEFAULT_ENDPOINT
    tracker_publish: str = TRACKER_ENDPOINT
    width: int = bounded(640, 16, 4096)
    height: int = bounded(360, 16, 4096)
    fps: float = bounded(15.0, 0.1, 60)
    tracker: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="gateway HTTP port (default 8081)")
    parser.add_argument("--node-port", type=int, metavar="PORT",
                        help="port the capture node publishes on, on 127.0.0.1 (default 5550)")
    parser.add_argument("--tracker-port", type=int, metavar="PORT",
                        help="port the tracker publishes the world on, on 127.0.0.1 (default 5560)")
    parser.add_argument("--fps", type=float, help="frames per second per camera (default 15)")
    parser.add_argument("--no-tracker", action="store_true", help="do not run the tracker")


def _cameras(config: DemoConfig) -> tuple:
    if config.tracker:
        # The seed's three cameras looking at a table with tagged objects the tracker can find:
        # the simulated scene, which the node knows only once the demo registers it.
        from . import sim
        from .sim.tracker import tabletop_cameras

        sim.register()
        return tabletop_cameras(config.width, config.height, config.fps)
    return demo_cameras(width=config.width, height=config.height, fps=config.fps)


def _start_tracker(stack: ExitStack, node_endpoint: str, publish: str, context: zmq.Context) -> str:
    from .sim.tracker import start_demo_tracker

    tracker = stack.enter_context(start_demo_tracker(node_endpoint, publish, context=context))
    return tracker.endpoint


def run(args: argparse.Namespace) -> int:
    config = load_section(args.config, "demo", DemoConfig)
    overrides = {"port": args.port, "fps": args.fps,
                 "publish": _loopback(args.node_port), "tracker_publish": _loopback(args.tracker_port)}
    config = dataclasses.replace(config, tracker=config.tracker and not args.no_tracker,
                                 **{k: v for k, v in overrides.items() if v is not None})
    stop = stop_event()
    context = zmq.Context.instance()
    with ExitStack() as stack:
        node_config = NodeConfig(name="demo", publish=config.publish, cameras=_cameras(config))
        try:
            node = stack.enter_context(CaptureNode(node_config, context=context))
        except CamfabricError as exc:
            raise CamfabricError(f"{exc} — is another camfabric node running? Stop it, or set "
                                 "[demo] publish to a free endpoint") from exc
        # The tracker's endpoint goes where the gateway takes `world` from, and nowhere else.
        tracker: tuple[str, ...] = ()
        if config.tracker:
            tracker = (_start_tracker(stack, node.endpoint, config.tracker_publish, context),)
        gateway_config = GatewayConfig(port=config.port, subscribe=(node.endpoint,), tracker=tracker)
        try:
            gateway = stack.enter_context(Gateway(gateway_config, context=context))
        except OSError as exc:
            raise CamfabricError(f"cannot serve HTTP on 127.0.0.1:{config.port}: {exc.strerror} — "
                                 "use --port to pick another") from exc
        _wait_first_frame(node.endpoint, context, stop)
        # What port 0 (--port 0, --node-port 0, --tracker-port 0) turned into, for scripts.
        log.info("demo: node publishing on %s%s; gateway serving %s", node.endpoint,
                 f", tracker on {tracker[0]}" if tracker else "", gateway.url)
        print(f"camfabric demo: open {gateway.url}  (cameras 0, 1, 2; Ctrl-C stops)", flush=True)
        stop.wait()
    return 0


def _loopback(port: int | None) -> str | None:
    if port is None:
        return None
    if not 0 <= port <= 65535:
        raise ConfigError("port", f"{port} is not a TCP port (0-65535)")
    return f"tcp://127.0.0.1:{port}"


def _wait_first_frame(endpoint: str, context: zmq.Context, stop: threading.Event) -> None:
    with Subscriber(endpoint, cameras=[0], context=context) as sub:
        while not stop.is_set():
            try:
                sub.latest(0, timeout=1.0)
                return
            except FrameTimeout:
                log.info("waiting for the first frame of camera 0 …")
