"""The `[prusa_connect]` section: which fabric cameras go to which Connect camera, and how.

    [prusa_connect]
    server = "https://connect.prusa3d.com"
    nodes = ["tcp://127.0.0.1:5550"]

    [[prusa_connect.cameras]]
    cam = 0
    token_env = "PRUSA_CONNECT_TOKEN_0"   # or: token = "<20 characters from Connect>"
    name = "Overhead"
    interval_s = 10

    [prusa_connect.curve."tcp://10.0.0.5:5550"]   # keys for a CURVE-secured node off this host
    secret_key_file = "/etc/camfabric/prusa-connect.key_secret"
    server_public_key_file = "/etc/camfabric/node-a.key"

The dataclasses are the schema (see `camfabric.runtime.config`). A camera's token is resolved once,
while the config is built: from `token`, or from the environment variable named by
`token_env`. Tokens are kept out of every `repr`, so a logged config never shows one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ...protocol.publisher import DEFAULT_ENDPOINT
from ...protocol.security import CurveClient, is_loopback_endpoint
from ...runtime.config import bounded, check_unique, load_section
from ...runtime.errors import ConfigError

DEFAULT_SERVER = "https://connect.prusa3d.com"
DEFAULT_PUBLISH = "tcp://127.0.0.1:5561"
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024  # Connect's documented limit for one snapshot
# Connect's rules for an "other camera", from Prusa's camera API (OpenAPI v0.22.0,
# https://connect.prusa3d.com/docs/cameras/openapi/), the PrusaLink SDK (prusa3d/
# Prusa-Connect-SDK-Printer, prusa/connect/printer/camera.py) and Prusa's ESP32 camera firmware
# (prusa3d/Prusa-Firmware-ESP32-Cam):
TOKEN_LENGTH = 20  # the token Connect shows is exactly 20 letters and digits
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9]{20}$")
MAX_NAME_LENGTH = 64  # config.name: Connect answers 400 on /c/info beyond it
MIN_INTERVAL_S = 10.0  # one snapshot per camera per 10 s (firmware REFRESH_INTERVAL_MIN 10; SDK TEN_SEC)
# The time-based trigger schemes of a camera's config (SDK TriggerScheme; the OpenAPI's
# CameraConfig.trigger_scheme). Without one Connect assumes THIRTY_SEC.
TRIGGER_SCHEMES = ((10.0, "TEN_SEC"), (30.0, "THIRTY_SEC"), (60.0, "SIXTY_SEC"), (600.0, "TEN_MIN"))
_FINGERPRINT_CHARS = re.compile(r"^[\x21-\x7e]{16,64}$")  # printable ASCII, no spaces: a header value


@dataclass(frozen=True, slots=True)
class CameraUpload:
    """One fabric camera uploaded to one Connect camera ("Add new other camera")."""

    cam: int = bounded(lo=0)
    token: str | None = field(default=None, repr=False)
    token_env: str | None = None
    name: str = ""
    interval_s: float = bounded(10.0, None, 86400.0)
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not self.interval_s >= MIN_INTERVAL_S:
            raise ConfigError("interval_s", f"must be at least {MIN_INTERVAL_S:g}, got {self.interval_s!r}: "
                                            "Prusa Connect takes one snapshot per camera per 10 s and "
                                            "refuses faster uploads with 429")
        if self.token is not None and self.token_env is not None:
            raise ConfigError("token", "give either token or token_env, not both")
        token = self.token
        if self.token_env is not None:
            if not self.token_env:
                raise ConfigError("token_env", "must name an environment variable")
            token = os.environ.get(self.token_env)
            if not token:
                raise ConfigError(
                    "token_env",
                    f"environment variable {self.token_env} is not set or empty; it must hold the "
                    "camera token Prusa Connect shows after 'Add new other camera'",
                )
        if not token:
            raise ConfigError(
                "token",
                "missing: set token (or token_env) to the camera token Prusa Connect shows "
                "after 'Add new other camera'",
            )
        token = token.strip()
        # Never echo the value: a malformed token is still mostly a secret.
        if not _TOKEN_CHARS.match(token):
            what = ("has other characters than letters and digits" if re.search(r"[^A-Za-z0-9]", token)
                    else f"is {len(token)} characters long")
            raise ConfigError("token_env" if self.token_env is not None else "token",
                              f"must be the {TOKEN_LENGTH} letters and digits Prusa Connect shows; "
                              f"this one {what} (copy it whole from the Camera tab)")
        object.__setattr__(self, "token", token)
        if len(self.name) > MAX_NAME_LENGTH:
            raise ConfigError("name", f"is {len(self.name)} characters long; Connect accepts at most "
                                      f"{MAX_NAME_LENGTH}")
        if self.fingerprint is not None and not _FINGERPRINT_CHARS.match(self.fingerprint):
            raise ConfigError("fingerprint", "must be 16 to 64 printable characters without spaces")

    @property
    def trigger_scheme(self) -> str:
        """Connect's trigger scheme for this interval: the nearest one that is not faster."""
        for seconds, scheme in TRIGGER_SCHEMES:
            if self.interval_s <= seconds:
                return scheme
        return TRIGGER_SCHEMES[-1][1]

    @property
    def label(self) -> str:
        """How logs name this camera: its Connect name and fabric id, never its token."""
        return f"camera {self.cam}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True, slots=True)
class PrusaConnectConfig:
    """The uploader process: where frames come from, where they go, where state is kept."""

    server: str = DEFAULT_SERVER
    nodes: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    publish: str = DEFAULT_PUBLISH
    state_dir: Path | None = None
    timeout_s: float = bounded(10.0, 0.1, 300.0)
    max_age_s: float = bounded(30.0, 0.1, 86400.0)
    max_bytes: int = bounded(MAX_SNAPSHOT_BYTES, 4096, MAX_SNAPSHOT_BYTES)
    retry_max_s: float = bounded(300.0, 0.1, 86400.0)
    status_interval_s: float = bounded(2.0, 0.1, 60.0)
    cameras: tuple[CameraUpload, ...] = ()
    curve: dict[str, CurveClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = urlsplit(self.server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError("server", f"must be an http(s) URL like {DEFAULT_SERVER}, got {self.server!r}")
        if url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("server", "must use https:// — camera tokens are never sent in the "
                                        "clear (http:// is accepted for loopback only)")
        if url.query or url.fragment or url.username or url.password:
            raise ConfigError("server", "must be a plain server URL without credentials, query or fragment")
        object.__setattr__(self, "server", self.server.rstrip("/"))
        if not self.nodes:
            raise ConfigError("nodes", "needs at least one fabric endpoint")
        for i, endpoint in enumerate(self.nodes):
            if "://" not in endpoint:
                raise ConfigError(f"nodes[{i}]", f"{endpoint!r} is not a ZeroMQ endpoint like "
                                                 f"{DEFAULT_ENDPOINT}")
        for endpoint, keys in self.curve.items():
            if endpoint not in self.nodes:
                raise ConfigError(f"curve.{endpoint}", "is not one of the `nodes` endpoints")
            for name in ("secret_key_file", "server_public_key_file"):
                if not Path(getattr(keys, name)).is_file():
                    raise ConfigError(f"curve.{endpoint}.{name}", f"{getattr(keys, name)} not found "
                                      "(make keys with `camfabric keys`)")
        if not is_loopback_endpoint(self.publish):
            raise ConfigError("publish", "the uploader's status publisher binds loopback only")
        # One fabric camera is one Connect camera.
        check_unique([camera.cam for camera in self.cameras], "cameras|cam", "prusa_connect")
        if self.state_dir is None:
            object.__setattr__(self, "state_dir", default_state_dir())

    @property
    def curve_clients(self) -> dict[str, CurveClient]:
        """CURVE keys per node endpoint, in the form `protocol.Subscriber` takes."""
        return dict(self.curve)


def default_state_dir() -> Path:
    """Where fingerprints live when `state_dir` is not configured.

    systemd's `StateDirectory=` wins (it exports $STATE_DIRECTORY); then /var/lib/camfabric for
    root, the FHS place for a system service's persistent state; otherwise the user's XDG state
    home (~/.local/state/camfabric), which survives reboots, unlike /run or /tmp.
    """
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/camfabric")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "camfabric"


def load_config(path: str | Path | None) -> PrusaConnectConfig:
    """The validated `[prusa_connect]` section of the TOML file at `path`."""
    config = load_section(path, "prusa_connect", PrusaConnectConfig)
    if not config.cameras:
        raise ConfigError("prusa_connect.cameras", "no camera configured; add a [[prusa_connect.cameras]] "
                                                   "table with cam and token")
    return config
