"""The one exception hierarchy of camfabric.

    CamfabricError
    ├── ProtocolError          a message that breaks wire format v1
    │   ├── VersionError       header `v` missing or not 1
    │   └── LimitError         payload, size or stride beyond the limits
    ├── FrameTimeout           no (fresh) frame within the timeout asked for
    ├── UnknownCamera          a camera id no node has announced
    ├── SourceError            a camera source that failed to open or to read
    └── ConfigError            a configuration file or value that cannot be used;
                               `.path` names the key ("node.cameras[1].fps")

Errors from libraries underneath (msgpack, zmq, OpenCV) are translated at the seam with
`raise ... from exc`, so callers catch ours only.
"""

from __future__ import annotations


class CamfabricError(Exception):
    """Root of every error camfabric raises on purpose."""


class ProtocolError(CamfabricError):
    """A message on the fabric that does not follow wire format v1; receivers drop and count it."""


class VersionError(ProtocolError):
    """The header's `v` is missing or names a version this code does not speak."""


class LimitError(ProtocolError):
    """A frame beyond the format's limits (payload, width/height, raw length)."""


class FrameTimeout(CamfabricError, TimeoutError):
    """No frame (or no fresh frame) arrived within the timeout."""


class UnknownCamera(CamfabricError, LookupError):
    """A camera id that no node on the fabric has announced."""

    def __init__(self, cam: object) -> None:
        super().__init__(f"unknown camera {cam!r}")
        self.cam = cam


class SourceError(CamfabricError):
    """A camera source that could not open or read; the node retries it with backoff."""


class ConfigError(CamfabricError, ValueError):
    """A configuration that cannot be used. `path` is the dotted key path, '' for the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
