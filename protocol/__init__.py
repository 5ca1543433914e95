"""Wire format v1 of the camfabric fabric, and the public API for robotics code.

    from camfabric import protocol
    with protocol.Subscriber("tcp://127.0.0.1:5550", cameras=[0], encoding="bgr8") as sub:
        image = sub.latest(0, timeout=2.0).image     # numpy (h, w, 3) uint8

No camera and no HTTP in here: topics, the typed messages and their multipart form, the
XPUB `Publisher`, the `Subscriber`, CURVE helpers and the one exception hierarchy.
"""

from . import topics
from .delay import LinkDelay
from .endpoint import check_endpoint
from .errors import (
    CamfabricError,
    ClosedError,
    ConfigError,
    EncodingError,
    EndpointError,
    FrameTimeout,
    LimitError,
    ProtocolError,
    UnknownCamera,
    VersionError,
)
from .jpeg import decode_jpeg, encode_jpeg, is_complete_jpeg
from .publisher import DEFAULT_ENDPOINT, Publisher
from .security import CurveClient, CurveServer, generate_keypair, is_loopback_endpoint
from .subscriber import Subscriber, SubscriberStats, captured_locally_ns
from .sync import FrameSet, SyncTimeout
from .wire import VERSION, Frame, Message, Meta, Scan, Status, World, decode, encode
from .world import Estimate, WorldObject

__all__ = [
    "DEFAULT_ENDPOINT",
    "VERSION",
    "CamfabricError",
    "ClosedError",
    "ConfigError",
    "CurveClient",
    "CurveServer",
    "EncodingError",
    "EndpointError",
    "Estimate",
    "Frame",
    "FrameSet",
    "FrameTimeout",
    "LimitError",
    "LinkDelay",
    "Message",
    "Meta",
    "ProtocolError",
    "Publisher",
    "Scan",
    "Status",
    "Subscriber",
    "SubscriberStats",
    "SyncTimeout",
    "UnknownCamera",
    "VersionError",
    "World",
    "WorldObject",
    "captured_locally_ns",
    "check_endpoint",
    "decode",
    "decode_jpeg",
    "encode",
    "encode_jpeg",
    "generate_keypair",
    "is_complete_jpeg",
    "is_loopback_endpoint",
    "topics",
]
