"""The `[timelapse]` section: which camera, which printer, when to take frames, how to render.

    [timelapse]
    nodes = ["tcp://127.0.0.1:5550"]          # fabric endpoints, as the tracker's
    moonraker = "http://127.0.0.1:7125"       # its websocket is ws://…/websocket
    api_key_env = "MOONRAKER_API_KEY"         # read only when Moonraker asks for a key
    camera = 0
    mode = "layer"                            # or "hyperlapse": one frame every interval_s
    interval_s = 10.0
    settle_s = 0.5                            # after a trigger, for the park move
    frame_timeout_s = 5.0                     # no frame captured by then: skipped, counted
    fps = 30.0                                # or target_length_s with min_fps / max_fps
    duplicate_last_s = 0.0                    # hold the last frame this long at the end
    output_dir = "~/printer_data/timelapse"   # where Mainsail and Fluidd look
    frames_max_age_days = 7.0                 # frame folders older than this are removed

Every key is optional; the defaults suit one Pi with Klipper, Moonraker and one camera.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ...protocol.endpoint import check_endpoint
from ...protocol.errors import EndpointError
from ...protocol.publisher import DEFAULT_ENDPOINT
from ...protocol.security import is_loopback_host
from ...runtime.config import bounded, load_section
from ...runtime.errors import ConfigError

DEFAULT_PUBLISH = "tcp://127.0.0.1:5562"
DEFAULT_MOONRAKER = "http://127.0.0.1:7125"
Mode = Literal["layer", "hyperlapse"]
Codec = Literal["auto", "h264", "mp4v", "vp9"]


def default_output_dir() -> Path:
    """Moonraker's `timelapse` folder under the printer's data dir, where Mainsail and Fluidd
    list timelapses: $PRINTER_DATA_DIR/timelapse, else ~/printer_data/timelapse."""
    base = os.environ.get("PRINTER_DATA_DIR") or str(Path.home() / "printer_data")
    return Path(base) / "timelapse"


@dataclass(frozen=True, slots=True)
class TimelapseConfig:
    """The whole `[timelapse]` section."""

    nodes: list[str] = field(default_factory=lambda: [DEFAULT_ENDPOINT])
    publish: str = DEFAULT_PUBLISH  # status/timelapse/ for the gateway's /status
    moonraker: str = DEFAULT_MOONRAKER
    api_key_env: str = "MOONRAKER_API_KEY"
    camera: int = bounded(0, 0, 1_000_000)
    mode: Mode = "layer"
    interval_s: float = bounded(10.0, 0.05, 86400.0)  # hyperlapse
    settle_s: float = bounded(0.5, 0.0, 60.0)
    frame_timeout_s: float = bounded(5.0, 0.1, 600.0)
    fps: float = bounded(30.0, 1.0, 120.0)
    target_length_s: float | None = bounded(None, 0.5, 3600.0)  # set: fps from the frame count
    min_fps: float = bounded(5.0, 1.0, 120.0)
    max_fps: float = bounded(60.0, 1.0, 120.0)
    duplicate_last_s: float = bounded(0.0, 0.0, 60.0)
    codec: Codec = "auto"  # auto: H.264 through PyAV when installed, else OpenCV's mp4v (or vp9)
    output_dir: Path = field(default_factory=default_output_dir)
    frames_max_age_days: float = bounded(7.0, 0.0, 3650.0)
    jpeg_quality: int = bounded(90, 10, 100)  # the preview; frames are stored as captured
    reconnect_max_s: float = bounded(30.0, 0.1, 3600.0)
    status_interval_s: float = bounded(1.0, 0.05, 60.0)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("nodes", "at least one node endpoint is needed")
        for key, endpoint, bind in [*((f"nodes[{i}]", e, False) for i, e in enumerate(self.nodes)),
                                    ("publish", self.publish, True)]:
            try:
                check_endpoint(endpoint, bind=bind)
            except EndpointError as exc:
                raise ConfigError(key, str(exc)) from None
        parts = urlsplit(self.moonraker)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ConfigError("moonraker", f"must be Moonraker's URL like {DEFAULT_MOONRAKER}, "
                                           f"got {self.moonraker!r}")
        if self.min_fps > self.max_fps:
            raise ConfigError("min_fps", f"must be <= max_fps ({self.max_fps:g}), got {self.min_fps:g}")

    @property
    def websocket_url(self) -> str:
        """Moonraker's primary websocket: ws(s)://host:port/websocket."""
        parts = urlsplit(self.moonraker)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/")
        if not path.endswith("/websocket"):
            path += "/websocket"
        return f"{scheme}://{parts.netloc}{path}"

    def api_key(self, environ: dict[str, str] | None = None) -> str:
        """Moonraker's API key from the environment variable `api_key_env` ('' when unset).

        A key travels only over wss:// or to a loopback address: anything else is a ConfigError."""
        env = os.environ if environ is None else environ
        key = env.get(self.api_key_env, "")
        parts = urlsplit(self.moonraker)
        if key and parts.scheme in ("http", "ws") and not is_loopback_host(parts.hostname or ""):
            raise ConfigError("timelapse.moonraker", f"the API key from {self.api_key_env} would travel "
                              "in clear: use https:// (wss://) beyond a loopback address")
        return key

    def fps_for(self, frames: int) -> float:
        """The video's frame rate: `fps`, or with `target_length_s` the rate that makes a video
        of that length, kept within [min_fps, max_fps]."""
        if self.target_length_s is None or frames <= 0:
            return self.fps
        return min(self.max_fps, max(self.min_fps, frames / self.target_length_s))


def load_timelapse_config(path: str | Path | None) -> TimelapseConfig:
    """The `[timelapse]` section of the TOML file at `path`."""
    return load_section(path, "timelapse", TimelapseConfig)


__all__ = ["DEFAULT_PUBLISH", "TimelapseConfig", "default_output_dir", "load_timelapse_config"]
