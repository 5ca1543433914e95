"""The gateway: keeps the newest frame of every camera and serves the HTTP camera API.

    FrameCache      the fabric side: newest JPEG, heartbeat and owner per camera (cache.py)
    create_app      the Falcon app over a FrameCache (app.py, resources.py)
    MjpegStream     one MJPEG client's response body (mjpeg.py), written by the process's
                    one MjpegFanout thread, each client at its own pace (fanout.py)
    StreamStats     MJPEG clients, parts delivered and frames skipped per camera (fanout.py)
    Gateway         cache + app + Waitress in one process; `serve` runs 1..n workers (server.py)
    GatewayConfig   the [gateway] configuration section (config.py)
    QuickLatest     `/latest/{id}` of a camera asked for lately, answered on the server's loop
                    thread without the framework, as the app would answer it (quick.py)
    HttpServer      Waitress built, tuned and stopped; a request's connection taken over and
                    given back (waitress_seam.py, the one module that knows Waitress's insides;
                    its contract test, tests/gateway/test_waitress_seam.py, is the first thing
                    to run when upgrading Waitress)
"""

from .app import create_app
from .cache import FrameCache
from .config import GatewayConfig, load_gateway_config
from .mjpeg import MjpegStream, StreamSlots, StreamStats
from .server import Gateway, serve

__all__ = [
    "FrameCache",
    "Gateway",
    "GatewayConfig",
    "MjpegStream",
    "StreamSlots",
    "StreamStats",
    "create_app",
    "load_gateway_config",
    "serve",
]
