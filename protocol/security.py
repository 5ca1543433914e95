"""CURVE encryption and authentication for fabric sockets that leave loopback.

A node (server) holds a secret key and a directory of authorised client public keys, checked
through ZAP; a client (gateway, uploader, robot code) holds its own key pair and the node's
public key. Key files are ZeroMQ's certificate format, written by `camfabric keys`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The publishing side: its secret key file and the folder of authorised client keys."""

    secret_key_file: Path
    authorized_keys_dir: Path


@dataclass(frozen=True, slots=True)
class CurveClient:
    """The subscribing side: its own secret key file and the server's public key file."""

    secret_key_file: Path
    server_public_key_file: Path


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for inproc/ipc endpoints and tcp endpoints on 127.0.0.0/8, ::1 or localhost."""
    parsed = urlparse(endpoint)
    if parsed.scheme in ("inproc", "ipc"):
        return True
    host = (parsed.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or '*' binds beyond loopback


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(str(path), "key file not found")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(str(path), f"not a ZeroMQ certificate: {exc}") from exc
    if need_secret and not secret:
        raise ConfigError(str(path), "holds no secret key (use the .key_secret file)")
    return public, secret


def secure_server(socket: zmq.Socket, keys: CurveServer, context: zmq.Context) -> ThreadAuthenticator:
    """Make `socket` a CURVE server that admits only keys in `authorized_keys_dir`.

    Returns the running ZAP authenticator; the caller stops it when the socket closes.
    """
    public, secret = _load(Path(keys.secret_key_file), need_secret=True)
    if not Path(keys.authorized_keys_dir).is_dir():
        raise ConfigError(str(keys.authorized_keys_dir), "authorised keys directory not found")
    auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_keys_dir))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, keys: CurveClient) -> None:
    """Make `socket` a CURVE client of the server whose public key is given."""
    public, secret = _load(Path(keys.secret_key_file), need_secret=True)
    server_public, _ = _load(Path(keys.server_public_key_file), need_secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write `name.key` (public) and `name.key_secret` into `directory`; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)
