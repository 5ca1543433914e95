"""The `[node]` section: the node's name, where it publishes, and its cameras.

    [node]
    name = "cell"
    publish = "tcp://127.0.0.1:5550"
    [[node.cameras]]
    id = 0
    name = "Overhead"
    resolution = [1920, 1080]
    fps = 15
    [node.cameras.source]
    kind = "synthetic"

Each camera's `[node.cameras.source]` table names its `kind` (default "synthetic"); the other
keys are checked against that kind's `Options` dataclass, so a misspelt source key is an error
naming e.g. `node.cameras[1].source.port` before anything opens.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..protocol.publisher import DEFAULT_ENDPOINT
from ..protocol.security import CurveServer, is_loopback_endpoint
from ..protocol.wire import MAX_DIMENSION, MAX_FPS
from ..runtime.config import bounded, build, check_unique, load_section
from ..runtime.errors import ConfigError
from .sources import source_module

Rotation = Literal[0, 90, 180, 270]
Flip = Literal["none", "horizontal", "vertical", "both"]


@dataclass(frozen=True, slots=True)
class CurveConfig:
    """CURVE keys of a node that publishes beyond loopback (files written by `camfabric keys`)."""

    secret_key_file: Path
    authorized_keys_dir: Path

    def __post_init__(self) -> None:
        if not Path(self.secret_key_file).is_file():
            raise ConfigError("secret_key_file", f"{self.secret_key_file} not found "
                              "(create a key pair with `camfabric keys DIR --name NODE`)")
        if not Path(self.authorized_keys_dir).is_dir():
            raise ConfigError("authorized_keys_dir", f"{self.authorized_keys_dir} is not a directory "
                              "(it holds the public keys of the clients allowed to subscribe)")

    def server(self) -> CurveServer:
        return CurveServer(Path(self.secret_key_file), Path(self.authorized_keys_dir))


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """One camera of the node: its registry entry, its capture settings and its source.

    `options` is the source's validated `Options` (built from `source` minus `kind`);
    `frame_id` defaults to the role, else "cam{id}".
    """

    id: int = bounded(lo=0)
    name: str = ""
    role: str = ""
    mount: str = ""
    device: str = ""
    resolution: tuple[int, int] = (640, 360)
    fps: float = 15.0
    fov_deg: int | float | None = None
    description: str = ""
    frame_id: str = ""
    rotation: Rotation = 0
    flip: Flip = "none"
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic"})
    options: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 0:
            raise ConfigError("id", f"must be an integer >= 0, got {self.id!r}")
        w, h = self.resolution
        for axis, value in (("[0]", w), ("[1]", h)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
                raise ConfigError(f"resolution{axis}", f"must be an integer in 1..{MAX_DIMENSION}, "
                                  f"got {value!r}")
        if not 0 < self.fps <= MAX_FPS:
            raise ConfigError("fps", f"must be > 0 and <= {MAX_FPS}, got {self.fps!r}")
        if self.rotation not in (0, 90, 180, 270):
            raise ConfigError("rotation", f"must be one of 0, 90, 180, 270, got {self.rotation!r}")
        if self.flip not in ("none", "horizontal", "vertical", "both"):
            raise ConfigError("flip", "must be one of 'none', 'horizontal', 'vertical', 'both', "
                              f"got {self.flip!r}")
        object.__setattr__(self, "resolution", (w, h))
        if not self.frame_id:
            object.__setattr__(self, "frame_id", self.role or f"cam{self.id}")
        if not self.name:
            object.__setattr__(self, "name", f"Camera {self.id}")
        rest = dict(self.source)
        kind = rest.pop("kind", "synthetic")
        if not isinstance(kind, str):
            raise ConfigError("source.kind", f"expected a string, got {kind!r}")
        module = source_module(kind, "source.kind")
        object.__setattr__(self, "source", {"kind": kind, **rest})
        object.__setattr__(self, "options", build(module.Options, rest, "source"))

    @property
    def kind(self) -> str:
        """The source kind, e.g. "synthetic" or "v4l2"."""
        return self.source["kind"]

    @property
    def output_size(self) -> tuple[int, int]:
        """(w, h) of published frames: the resolution, turned by a 90/270 rotation."""
        w, h = self.resolution
        return (h, w) if self.rotation in (90, 270) else (w, h)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The capture node: its name on the fabric, its publish endpoint and its cameras."""

    name: str = field(default_factory=socket.gethostname)
    publish: str = DEFAULT_ENDPOINT
    insecure: bool = False
    # Read as a table and built in __post_init__: the loader's `X | None` reports errors inside
    # X at `node.curve` only, and the key that is wrong should be named.
    curve: dict[str, Any] | CurveConfig | None = None
    jpeg_quality: int = bounded(80, 1, 100)
    heartbeat_s: float = bounded(1.0, 0.05, 60.0)
    cameras: tuple[CameraConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.isascii() or any(c in self.name for c in "/ \t\n"):
            raise ConfigError("name", f"must be non-empty ASCII without '/' or spaces, got {self.name!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality!r}")
        if not self.heartbeat_s > 0:
            raise ConfigError("heartbeat_s", f"must be > 0, got {self.heartbeat_s!r}")
        if isinstance(self.curve, dict):
            object.__setattr__(self, "curve", build(CurveConfig, self.curve, "curve"))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        check_unique([camera.id for camera in self.cameras], "cameras|id", "node")
        if not is_loopback_endpoint(self.publish) and self.curve is None and not self.insecure:
            raise ConfigError(
                "publish",
                f"{self.publish} is reachable beyond this host; either add CURVE keys "
                "([node.curve] secret_key_file and authorized_keys_dir, made with `camfabric keys`) "
                "or set insecure = true to publish unencrypted to anyone on the network",
            )


def demo_cameras(width: int = 640, height: int = 360, fps: float = 15) -> tuple[CameraConfig, ...]:
    """The robot cell's three cameras from the seed registry, each with a synthetic source."""
    common = {"resolution": (width, height), "fps": fps, "fov_deg": 78}
    return (
        CameraConfig(id=0, name="Overhead", role="overhead", mount="fixed", device="/dev/video0",
                     description="Logitech BRIO mounted above workspace, looking straight down. "
                     "Primary camera for object detection X/Y positioning.", **common),
        CameraConfig(id=1, name="Arm-mounted", role="end_effector", mount="arm", device="/dev/video4",
                     description="Camera attached to end-effector. Moves with arm. "
                     "Used for close-up inspection and visual servo.", **common),
        CameraConfig(id=2, name="Side", role="side_profile", mount="fixed", device="/dev/video6",
                     description="Fixed side-view camera. "
                     "Used for height (Z) estimation of objects on workspace.", **common),
    )


def load_node_config(path: str | Path | None) -> NodeConfig:
    """The `[node]` section of the TOML file at `path` (defaults, no cameras, when None)."""
    return load_section(path, "node", NodeConfig)


def replace(config: NodeConfig, **changes: Any) -> NodeConfig:
    """A copy of `config` with `changes`, re-validated; errors name `node.<key>`."""
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as exc:
        raise ConfigError(f"node.{exc.path}" if exc.path else "node", exc.message) from None
