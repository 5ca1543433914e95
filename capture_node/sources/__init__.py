"""The registry of source kinds: name in `[node.cameras.source] kind = …` → module.

A module provides `Options` (its config dataclass) and `create(options, camera) -> Source`.
Modules are imported only when a camera uses them, so a missing optional system piece (say,
no V4L2 on this machine) affects only the cameras that need it. Kinds that live outside the
node (the demo's simulated scene) are added with `register_kind` by whoever brings them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ...runtime.errors import ConfigError

KINDS = {
    "synthetic": "camfabric.capture_node.sources.synthetic",
    "v4l2": "camfabric.capture_node.sources.v4l2",
    "rpicam": "camfabric.capture_node.sources.rpicam",
    "mjpeg_url": "camfabric.capture_node.sources.mjpeg_url",
    "file": "camfabric.capture_node.sources.file",
}


def register_kind(kind: str, module_name: str) -> None:
    """Make `kind = "<kind>"` name the source module `module_name` (imported when a camera
    uses it). Registering the same pair again is harmless; rebinding a kind is refused."""
    known = KINDS.get(kind)
    if known is not None and known != module_name:
        raise ValueError(f"source kind {kind!r} is already {known!r}, not {module_name!r}")
    KINDS[kind] = module_name


def source_module(kind: str, path: str = "source.kind") -> ModuleType:
    """The module implementing source `kind`; an unknown kind is a ConfigError at `path`."""
    module_name = KINDS.get(kind)
    if module_name is None:
        raise ConfigError(path, f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(path, f"source kind {kind!r} is not available in this build") from exc
        raise
