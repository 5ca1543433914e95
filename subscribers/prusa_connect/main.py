"""`camfabric prusa-connect`: upload each configured camera's newest JPEG to Prusa Connect."""

from __future__ import annotations

import argparse
import logging
import threading

from ...runtime.errors import ConfigError
from ...runtime.process import stop_event
from .config import load_config
from .fingerprint import FingerprintError, FingerprintStore
from .service import UploaderService

HELP = "upload camera snapshots to Prusa Connect"

DESCRIPTION = """\
Uploads the newest JPEG of each configured fabric camera to Prusa Connect every interval_s
seconds (PUT /c/snapshot), as an "other camera" of a printer. In Prusa Connect open the
printer, Camera tab, "Add new other camera", and copy the token it shows into the config.

Frames older than max_age_s or already uploaded are never sent; the uploader subscribes to a
camera's JPEG only around each upload. Server errors, 429, timeouts and network failures are
retried with capped exponential backoff (Retry-After honoured). A rejected token (401/403)
is re-checked with one request every 15 minutes; a rejected fingerprint stops that camera
until the config is reloaded; both log what to do. interval_s is at least 10 (Connect takes
one snapshot per camera per 10 s); the token is exactly 20 letters and digits. Send
SIGHUP to reload the config. State (per camera) is published as status/prusa_connect/ on
`publish`, which the gateway shows under /status.

Example config (TOML):

  [prusa_connect]
  server = "https://connect.prusa3d.com"   # default
  nodes = ["tcp://127.0.0.1:5550"]         # fabric endpoints, default as shown
  publish = "tcp://127.0.0.1:5561"         # status publisher, default as shown
  # state_dir = "/var/lib/camfabric"       # fingerprints; default: $STATE_DIRECTORY,
  #                                        # /var/lib/camfabric as root, else ~/.local/state/camfabric
  timeout_s = 10                           # per HTTP request
  max_age_s = 30                           # never upload an older frame
  max_bytes = 16777216                     # larger JPEGs are recompressed to fit
  retry_max_s = 300                        # backoff cap

  [[prusa_connect.cameras]]
  cam = 0                                  # fabric camera id
  token_env = "PRUSA_CONNECT_TOKEN_0"      # or: token = "<20 characters from Connect>"
  name = "Overhead"
  interval_s = 10

  [[prusa_connect.cameras]]
  cam = 2
  token = "AbCdEfGhIjKlMnOpQrSt"
  name = "Side"

  # Only for a node on another host that requires CURVE (see `camfabric keys`):
  # [prusa_connect.curve."tcp://10.0.0.5:5550"]
  # secret_key_file = "/etc/camfabric/prusa-connect.key_secret"
  # server_public_key_file = "/etc/camfabric/node-a.key"
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="validate the config (and tokens in the environment) and exit")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        FingerprintStore(config.state_dir).check()
    except FingerprintError as exc:
        raise _state_error(exc) from exc
    if args.check:
        print(f"{args.config}: [prusa_connect] is valid ({len(config.cameras)} camera(s))")
        return 0
    reload_requested = threading.Event()
    stop = stop_event(on_reload=reload_requested.set)
    try:
        service = UploaderService(config).start()
    except FingerprintError as exc:
        raise _state_error(exc) from exc
    try:
        while not stop.wait(0.2):
            if reload_requested.is_set():
                reload_requested.clear()
                _reload(service, args.config)
    finally:
        service.stop()
    return 0


def _state_error(exc: FingerprintError) -> ConfigError:
    """A fingerprint file that cannot be used is the user's to resolve: exit 2, which systemd's
    RestartPreventExitStatus=2 does not restart every 5 s."""
    return ConfigError("prusa_connect.state_dir", str(exc))


def _reload(service: UploaderService, path: str | None) -> None:
    log.info("SIGHUP: reloading %s", path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        log.error("config reload failed, keeping the running configuration: %s", exc)
        return
    try:
        service.reload(config)
    except Exception:
        log.exception("applying the reloaded configuration failed; the cameras still running carry on")
