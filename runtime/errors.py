"""The root of camfabric's errors, and the configuration error every part's loader raises.

    CamfabricError                 every error camfabric raises on purpose
    └── ConfigError                a configuration file or value that cannot be used;
                                   `.path` names the key ("node.cameras[1].fps")

Each part adds its own below the root: the wire format's in protocol/errors.py, a camera's in
capture_node/errors.py. Errors from libraries underneath are translated at the seam with
`raise ... from exc`, so callers catch ours only.
"""

from __future__ import annotations


class CamfabricError(Exception):
    """Root of every error camfabric raises on purpose."""


class ConfigError(CamfabricError, ValueError):
    """A configuration that cannot be used. `path` is the dotted key path, '' for the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
