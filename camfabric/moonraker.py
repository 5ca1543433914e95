"""`camfabric moonraker`: the gateway's cameras as Moonraker webcams, for Mainsail, Fluidd and
MobileRaker.

    camfabric moonraker --gateway http://printer.local:8081              # print [webcam …] sections
    camfabric moonraker --gateway http://127.0.0.1:8081 --path-prefix /webcam2/
    camfabric moonraker --gateway http://127.0.0.1:8081 --path-prefix /webcam2/ \\
                        --register http://127.0.0.1:7125                 # or register them

Moonraker's webcam API (Arksine/moonraker, docs/external_api/webcams.md): `GET
/server/webcams/list` lists entries with a `source` of "config" (from moonraker.conf, which the
API cannot change) or "database"; `POST /server/webcams/item` adds an entry, or updates the one
named by `uid` (or, without one, by `name`) in place. A registration therefore looks each camera
up by name first: a database entry is updated through its uid, a moonraker.conf entry is left
alone and reported, anything else is added — so running it twice leaves one entry per camera.

URLs are mjpg-streamer's `?action=stream|snapshot` with `cam=N`: the one scheme every frontend
reads, and the one whose stream URL survives MobileRaker rewriting `action=stream` into
`action=snapshot`. With `--service webrtc-mediamtx` the stream URL is the gateway's WHEP
base, `/webrtc/N` (H.264 over WebRTC at a fraction of MJPEG's bandwidth), and the snapshot
stays mjpg-streamer's. With `--path-prefix` they are relative (`/webcam2/?action=…`), served
through the web UI's own nginx, so HTTPS, remote access and tunnels keep working.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from camfabric.runtime.errors import CamfabricError, ConfigError

HELP = "print (or register) Moonraker [webcam] sections for the gateway's cameras"

DESCRIPTION = """\
Reads the cameras a running gateway announces (GET /cameras) and prints a ready
`[webcam NAME]` section per camera for moonraker.conf, or registers them in Moonraker's
database through its webcam API (--register), which Mainsail, Fluidd and MobileRaker read.

The gateway is --gateway, or the [gateway] host and port of --config (the file the gateway
itself runs with, e.g. /etc/camfabric/camfabric.toml), or http://127.0.0.1:8081.

URLs: without --path-prefix, absolute URLs on the --gateway address (pass the address the
browsers use, e.g. http://printer.local:8081). With --path-prefix /webcam2/ (the nginx path
MainsailOS/FluiddPi map to port 8081), relative URLs that work over HTTPS and remote access.
Rotation and flips are 0: the capture node already turns the pixels.

--register MOONRAKER_URL adds or updates each camera by name; a webcam defined in
moonraker.conf is never touched. When Moonraker asks for an API key, set MOONRAKER_API_KEY.

See docs/klipper.md.
"""

API_KEY_ENV = "MOONRAKER_API_KEY"
DEFAULT_SERVICE = "mjpegstreamer-adaptive"
# Moonraker's webcam services that the gateway serves: its MJPEG stream (polled snapshots in
# the adaptive one) and WebRTC by WHEP as MediaMTX serves it (the `webrtc` extra).
SERVICES = ("mjpegstreamer-adaptive", "mjpegstreamer", "webrtc-mediamtx")
WEBRTC_SERVICE = "webrtc-mediamtx"
DEFAULT_FPS = 15
TIMEOUT_S = 5.0


class MoonrakerError(CamfabricError):
    """The gateway or Moonraker could not be read or refused a request."""


@dataclass(frozen=True, slots=True)
class Webcam:
    """One Moonraker webcam entry, with Moonraker's own field names."""

    name: str
    stream_url: str
    snapshot_url: str
    service: str = DEFAULT_SERVICE
    target_fps: int = DEFAULT_FPS
    aspect_ratio: str = "4:3"
    location: str = "printer"
    rotation: int = 0
    flip_horizontal: bool = False
    flip_vertical: bool = False

    def fields(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "service": self.service,
                "target_fps": self.target_fps, "stream_url": self.stream_url,
                "snapshot_url": self.snapshot_url, "aspect_ratio": self.aspect_ratio,
                "rotation": self.rotation, "flip_horizontal": self.flip_horizontal,
                "flip_vertical": self.flip_vertical}

    def section(self) -> str:
        """The `[webcam NAME]` section for moonraker.conf."""
        lines = [f"[webcam {self.name}]"]
        for key, value in self.fields().items():
            if key != "name":
                lines.append(f"{key}: {value}")
        return "\n".join(lines) + "\n"


def aspect_ratio(width: int, height: int) -> str:
    """`W:H` in lowest terms (1280x720 -> 16:9), Moonraker's format; 4:3 when unknown."""
    if width <= 0 or height <= 0:
        return "4:3"
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


def webcams(cameras: dict[str, Any], status: dict[str, Any], *, base: str, path_prefix: str | None,
            service: str) -> list[Webcam]:
    """One Webcam per camera of the gateway's /cameras (fps from its /status when known)."""
    prefix = base.rstrip("/") + "/" if path_prefix is None else path_prefix
    result: list[Webcam] = []
    names: set[str] = set()
    for key in sorted(cameras, key=lambda k: int(k) if str(k).isdigit() else 0):
        entry = cameras[key] if isinstance(cameras[key], dict) else {}
        cam = int(entry.get("id", key))
        name = _clean(str(entry.get("name") or "")) or f"camera{cam}"
        if name in names:
            name = f"{name} {cam}"
        names.add(name)
        width, height = (entry.get("resolution") or [0, 0])[:2]
        fps = (status.get(str(cam)) or {}).get("fps") if isinstance(status, dict) else None
        # Halves round up, as the dashboard's JavaScript does (gateway/static/moonraker.js).
        target = math.floor(fps + 0.5) if isinstance(fps, int | float) and fps >= 1 else DEFAULT_FPS
        stream = f"{prefix}webrtc/{cam}" if service == WEBRTC_SERVICE else f"{prefix}?action=stream&cam={cam}"
        result.append(Webcam(
            name=name, service=service, target_fps=int(target),
            stream_url=stream,
            snapshot_url=f"{prefix}?action=snapshot&cam={cam}",
            aspect_ratio=aspect_ratio(int(width or 0), int(height or 0))))
    return result


class MoonrakerClient:
    """Moonraker's webcam API over HTTP: list, add, update by uid."""

    def __init__(self, url: str, api_key: str | None = None, session: Any = None) -> None:
        import requests  # only when registering: the CLI imports this module for --help

        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["X-Api-Key"] = api_key

    def list(self) -> list[dict[str, Any]]:
        result = self._call("GET", "/server/webcams/list")
        cams = result.get("webcams") if isinstance(result, dict) else None
        if not isinstance(cams, list):
            raise MoonrakerError(f"{self.url}/server/webcams/list: no 'webcams' list in the answer")
        return [c for c in cams if isinstance(c, dict)]

    def post(self, fields: dict[str, Any]) -> dict[str, Any]:
        result = self._call("POST", "/server/webcams/item", fields)
        return result.get("webcam", {}) if isinstance(result, dict) else {}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import requests

        try:
            response = self.session.request(method, self.url + path, json=body, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise MoonrakerError(f"cannot reach Moonraker at {self.url}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 401 or response.status_code == 403:
            raise MoonrakerError(f"Moonraker at {self.url} answered {response.status_code}: it wants an "
                                 f"API key — set {API_KEY_ENV} (Mainsail: Settings → General → API key, or "
                                 "`~/moonraker/scripts/fetch-apikey.sh`)")
        if not 200 <= response.status_code < 300:
            message = ((data or {}).get("error") or {}).get("message") if isinstance(data, dict) else None
            raise MoonrakerError(f"{method} {path} answered {response.status_code}: "
                                 f"{message or response.text[:200]}")
        if not isinstance(data, dict) or "result" not in data:
            raise MoonrakerError(f"{method} {path}: not a Moonraker answer (no 'result')")
        return data["result"]


def register(client: MoonrakerClient, cams: list[Webcam], out: Any = None) -> dict[str, str]:
    """Add or update each webcam by name; what happened to each: added, updated or kept."""
    out = out or sys.stdout
    existing = {c.get("name"): c for c in client.list()}
    outcome: dict[str, str] = {}
    for cam in cams:
        current = existing.get(cam.name)
        if current is not None and current.get("source") == "config":
            outcome[cam.name] = "kept"
            print(f"[webcam {cam.name}] is defined in moonraker.conf: left alone "
                  "(remove it there, or rename the camera, to register this one)", file=out)
            continue
        fields = cam.fields()
        if current is not None and current.get("uid"):
            fields["uid"] = current["uid"]  # update in place; the name stays the same
        client.post(fields)
        outcome[cam.name] = "updated" if current is not None else "added"
        print(f"{outcome[cam.name]} webcam {cam.name!r}: {cam.stream_url}", file=out)
    return outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway",
                        help="the gateway's URL (default: from --config's [gateway] host and port, "
                             "else http://127.0.0.1:8081)")
    parser.add_argument("--path-prefix", metavar="PATH",
                        help="serve through the web UI's nginx at this path, e.g. /webcam2/")
    parser.add_argument("--service", default=DEFAULT_SERVICE, choices=SERVICES,
                        help=f"Moonraker webcam service, one of {', '.join(SERVICES)} (default: "
                             f"{DEFAULT_SERVICE}; {WEBRTC_SERVICE} needs the gateway's webrtc extra)")
    parser.add_argument("--register", metavar="MOONRAKER_URL",
                        help="register the webcams in Moonraker (e.g. http://127.0.0.1:7125)")


def run(args: argparse.Namespace) -> int:
    base = _http_url(args.gateway or _gateway_of(args.config), "--gateway")
    prefix = args.path_prefix
    if prefix is not None:
        if not prefix.startswith("/") or "?" in prefix or "://" in prefix:
            raise ConfigError("--path-prefix", f"must be a path like /webcam2/, got {prefix!r}")
        prefix = prefix.rstrip("/") + "/"
    cameras = _get_json(base + "/cameras")
    if not isinstance(cameras, dict) or not cameras:
        raise MoonrakerError(f"the gateway at {base} announces no cameras (GET /cameras)")
    try:
        status = _get_json(base + "/status")
    except MoonrakerError:
        status = {}
    cams = webcams(cameras, status if isinstance(status, dict) else {}, base=base, path_prefix=prefix,
                   service=args.service)
    if args.register:
        url = _http_url(args.register, "--register")
        register(MoonrakerClient(url, os.environ.get(API_KEY_ENV)), cams)
        return 0
    print(f"# camfabric: {len(cams)} camera(s) of {base}; paste into moonraker.conf")
    for cam in cams:
        print()
        print(cam.section(), end="")
    return 0


def _gateway_of(config: str | None) -> str:
    """The local gateway's URL from a config file's [gateway] section (loopback for 0.0.0.0)."""
    if config is None:
        return "http://127.0.0.1:8081"
    from camfabric.gateway.config import load_gateway_config

    gateway = load_gateway_config(config)
    host = gateway.host if gateway.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{gateway.port}"


def _http_url(url: str, option: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(option, f"must be an http(s) URL like http://127.0.0.1:8081, got {url!r}")
    return url.rstrip("/")


def _get_json(url: str) -> Any:
    import requests

    try:
        response = requests.get(url, timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise MoonrakerError(f"cannot read {url}: {exc} (is `camfabric gateway` running there?)") from exc


def _clean(name: str) -> str:
    """A name that fits in `[webcam NAME]`: one line, no brackets."""
    return " ".join(name.replace("[", " ").replace("]", " ").split())[:64]


__all__ = ["MoonrakerClient", "MoonrakerError", "Webcam", "aspect_ratio", "register", "webcams"]
