"""The wire format's errors, under the one root that runtime/errors.py defines.

    CamfabricError
    ├── ProtocolError          a message that breaks wire format v1
    │   ├── VersionError       header `v` missing or not 1
    │   └── LimitError         payload, size or stride beyond the limits
    ├── FrameTimeout           no (fresh) frame within the timeout asked for; `.heard` says
    │                          whether anything at all came from the endpoints
    ├── UnknownCamera          a camera id no node has announced; `.announced` lists those that are
    ├── EndpointError          a malformed endpoint ("127.0.0.1:5550" without "tcp://")
    ├── EncodingError          an encoding the wire format does not know
    ├── ClosedError            a Subscriber used after close()
    └── ConfigError            a configuration file or value that cannot be used
                               (defined in runtime/errors.py, with the root)

Errors from libraries underneath (msgpack, zmq, OpenCV) are translated at the seam with
`raise ... from exc`, so callers catch ours only.
"""

from __future__ import annotations

from ..runtime.errors import CamfabricError, ConfigError

__all__ = [
    "CamfabricError",
    "ClosedError",
    "ConfigError",
    "EncodingError",
    "EndpointError",
    "FrameTimeout",
    "LimitError",
    "ProtocolError",
    "UnknownCamera",
    "VersionError",
]


class ProtocolError(CamfabricError):
    """A message on the fabric that does not follow wire format v1; receivers drop and count it."""


class VersionError(ProtocolError):
    """The header's `v` is missing or names a version this code does not speak."""


class LimitError(ProtocolError):
    """A frame beyond the format's limits (payload, width/height, raw length)."""


class FrameTimeout(CamfabricError, TimeoutError):
    """No frame (or no fresh frame) arrived within the timeout.

    `heard` is False when nothing at all (no heartbeat, no frame) came from the endpoints, so
    the caller can tell a wrong address from a camera that is slow or stopped."""

    def __init__(self, message: str, *, heard: bool = True) -> None:
        super().__init__(message)
        self.heard = heard


class UnknownCamera(CamfabricError, LookupError):
    """A camera id that no node on the fabric has announced; `announced` lists those that are."""

    def __init__(self, cam: object, announced: object = None, *, detail: str = "") -> None:
        self.cam = cam
        self.announced = sorted(announced) if announced is not None else None
        message = f"unknown camera {cam!r}"
        if detail:
            message += f": {detail}"
        elif self.announced is not None:
            known = ", ".join(str(c) for c in self.announced) or "none"
            message += f"; the cameras announced on the fabric are: {known}"
        super().__init__(message)


class EndpointError(CamfabricError, ValueError):
    """An endpoint that is not a ZeroMQ address, e.g. "127.0.0.1:5550" without "tcp://"."""


class EncodingError(CamfabricError, ValueError):
    """An encoding the wire format does not know (it knows jpeg, bgr8 and gray8)."""


class ClosedError(CamfabricError, RuntimeError):
    """A Subscriber (or Publisher) used after it was closed."""
