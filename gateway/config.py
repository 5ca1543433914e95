"""The `[gateway]` section of the configuration file, as a typed, validated dataclass.

    [gateway]
    host = "127.0.0.1"          # a non-loopback address answers only `allow_from`
    port = 8081
    subscribe = ["tcp://127.0.0.1:5550"]      # nodes or proxies: frames, heartbeats, scans
    tracker = ["tcp://127.0.0.1:5560"]        # the tracker: `world` and its status only
    services = ["tcp://127.0.0.1:5561"]       # other services (uploader): their status only
                                              # (both: none unless configured)
    owners = { "0" = "cell" }                 # optional: the node that serves a camera id
    max_cameras = 256
    snap_timeout_s = 2.0
    max_streams = 200           # concurrent MJPEG clients, over all workers
    threads = 208               # request threads per worker; must exceed max_streams
    workers = 0                 # 0: one per CPU it may use, minus one when node_on_host
    node_on_host = true         # default: true when a `subscribe` endpoint is on this host
    pin_cpus = true             # each worker's threads on one CPU (default where 2+ CPUs)
    default_camera = 0
    heartbeat_timeout_s = 3.0
    stale_after_s = 5.0         # a newest frame older than this is never served as live
    idle_s = 10.0               # a camera's JPEG stays subscribed this long after its last request
    ice_servers = []            # WebRTC: STUN/TURN URLs offered to viewers; none: host only

    [gateway.curve."tcp://10.0.0.5:5550"]     # CURVE keys for an endpoint off loopback
    secret_key_file = "/etc/camfabric/gateway.key_secret"
    server_public_key_file = "/etc/camfabric/node-a.key"
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol.security import CurveClient, is_loopback_endpoint, is_loopback_host
from ..runtime.config import bounded, load_section
from ..runtime.errors import ConfigError

# Each topic is taken only from the endpoints configured for it, so a process that binds the
# tracker's or the uploader's port (whether or not they run) can never publish a camera. The
# tracker and the services are connected to only when configured: a world model or a service
# status comes only from an endpoint the operator named, never from whoever binds a default port.
DEFAULT_SUBSCRIBE = ("tcp://127.0.0.1:5550",)
# Loopback, the RFC 1918 private ranges, link-local, and their IPv6 counterparts.
DEFAULT_ALLOW_FROM = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10",
)
# Request threads left for snapshots and JSON when every MJPEG stream holds one.
SPARE_THREADS = 8

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """This gateway's secret key file and the publishing node's public key file."""

    secret_key_file: Path
    server_public_key_file: Path


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs; `threads=None` means max_streams + 8."""

    host: str = "127.0.0.1"
    port: int = bounded(8081, 0, 65535)
    subscribe: tuple[str, ...] = DEFAULT_SUBSCRIBE
    tracker: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    owners: dict[str, str] = field(default_factory=dict)
    max_cameras: int = bounded(256, 1, 100_000)
    snap_timeout_s: float = bounded(2.0, 0.05, 60.0)
    # What one worker was measured to serve (docs/benchmarks.md): 200 streams of 3 × 1080p30 at
    # full rate, 0.28 of a core, /latest p99 9.6 ms beside them, on a 2-core VM.
    max_streams: int = bounded(200, 1, 1000)
    threads: int | None = bounded(None, 2, 2000)
    workers: int = bounded(0, 0, 64)
    node_on_host: bool | None = None
    pin_cpus: bool | None = None
    allow_from: tuple[str, ...] = DEFAULT_ALLOW_FROM
    default_camera: int = bounded(0, 0, 1_000_000)
    heartbeat_timeout_s: float = bounded(3.0, 0.2, 600.0)
    stale_after_s: float = bounded(5.0, 0.1, 3600.0)
    idle_s: float = bounded(10.0, 0.1, 3600.0)
    curve: dict[str, CurveKeys] = field(default_factory=dict)
    ice_servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host", "must not be empty")
        if not self.subscribe:
            raise ConfigError("subscribe", "needs at least one fabric endpoint")
        for key in ("subscribe", "tracker", "services"):
            for i, endpoint in enumerate(getattr(self, key)):
                if "://" not in endpoint:
                    raise ConfigError(f"{key}[{i}]", f"{endpoint!r} is not a ZeroMQ endpoint "
                                                     "like tcp://127.0.0.1:5550")
        for cam in self.owners:
            if not cam.isdigit():
                raise ConfigError(f"owners.{cam}", "keys are camera ids (e.g. \"0\"), values node names")
        for i, net in enumerate(self.allow_from):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ConfigError(f"allow_from[{i}]", f"not a network: {exc}") from None
        for endpoint, keys in self.curve.items():
            if endpoint not in self.endpoints:
                raise ConfigError(f"curve.{endpoint}", "is not one of the `subscribe`, `tracker` "
                                                       "or `services` endpoints")
            for name in ("secret_key_file", "server_public_key_file"):
                if not getattr(keys, name).is_file():
                    raise ConfigError(f"curve.{endpoint}.{name}", f"{getattr(keys, name)} not found")
        for i, url in enumerate(self.ice_servers):
            if not url.startswith(("stun:", "turn:", "turns:")) or any(c in url for c in " <>,\"\r\n"):
                raise ConfigError(f"ice_servers[{i}]", f"{url!r} is not a STUN or TURN URL like "
                                                       "stun:stun.example.org:3478")
        if self.threads is not None and self.threads <= self.max_streams:
            raise ConfigError("threads", f"must exceed max_streams ({self.max_streams}): every "
                                         "MJPEG stream holds a thread, snapshots need the rest")

    @property
    def request_threads(self) -> int:
        """Request threads per worker: every stream may land on one worker, plus spares."""
        return self.threads if self.threads is not None else self.max_streams + SPARE_THREADS

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every fabric endpoint this gateway connects to, whatever its role."""
        return (*self.subscribe, *self.tracker, *self.services)

    @property
    def camera_owners(self) -> dict[int, str]:
        return {int(cam): node for cam, node in self.owners.items()}

    @property
    def shares_host(self) -> bool:
        """Whether a capture node runs on this host: `node_on_host`, by default whether any
        `subscribe` endpoint is local (loopback, ipc, inproc)."""
        if self.node_on_host is not None:
            return self.node_on_host
        return any(is_loopback_endpoint(e) for e in self.subscribe)

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_from)

    @property
    def curve_clients(self) -> dict[str, CurveClient]:
        return {endpoint: CurveClient(k.secret_key_file, k.server_public_key_file)
                for endpoint, k in self.curve.items()}

    @property
    def loopback_only(self) -> bool:
        """True when the listening address is reachable from this host only."""
        return is_loopback_host(self.host)


def load_gateway_config(path: str | Path | None) -> GatewayConfig:
    """The `[gateway]` section of the TOML file at `path` (all defaults when None)."""
    return load_section(path, "gateway", GatewayConfig)
