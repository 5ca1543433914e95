"""CURVE encryption and authentication for fabric sockets that leave loopback.

A node (server) holds a secret key and a directory of authorised client public keys, checked
through ZAP; a client (gateway, uploader, robot code) holds its own key pair and the node's
public key. Key files are ZeroMQ's certificate format, written by `camfabric keys`.

Operating it:

- The authorised keys directory is re-read when it changes (`ServerAuth.check`, called by the
  socket's owner every turn, looks at most once a second). A key *removed* also ends every
  established connection (the endpoint is unbound and bound again), so each client must pass
  ZAP again and a revoked one receives nothing more; the others reconnect within a second.
- A refused client is logged once per peer address by the server, with the reason; a client
  logs once per endpoint why its handshake failed (a socket monitor), naming the side to fix.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from ..runtime.logonce import LogOnce
from ..runtime.optional import MissingDependency
from .errors import ConfigError

log = logging.getLogger(__name__)
KEYS_CHECK_INTERVAL_S = 1.0
# ServerAuth extends pyzmq's ThreadAuthenticator as it is from pyzmq 25 on (one authenticator,
# coroutine handlers); pyzmq 24 (Debian bookworm's) runs a different one in its thread.
CURVE_SERVER_PYZMQ = (25,)
REBIND_TIMEOUT_S = 2.0


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
    return is_loopback_host(parsed.hostname or "")


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (brackets allowed); an interface name or '*'
    reaches beyond loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _keys_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return ()
    return tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries
                 if e.name.endswith(".key") and e.is_file())


class ServerAuth(ThreadAuthenticator):
    """The ZAP handler of one CURVE server: admits the keys in a directory, follows changes to
    it, and says once per peer why it refused one."""

    def __init__(self, context: zmq.Context, directory: Path,
                 server_log: logging.Logger | None = None) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self.directory = Path(directory)
        self.server_log = server_log or log
        self.refusals = LogOnce(self.server_log)
        self.refused = 0
        self._peer = ""
        self._signature = _keys_signature(self.directory)
        self._next_check = time.monotonic() + KEYS_CHECK_INTERVAL_S

    def load(self) -> set[bytes]:
        """(Re-)read the directory; returns the z85 public keys now admitted."""
        self.configure_curve(domain="*", location=str(self.directory))
        return set(self.certs.get("*", {}))

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._peer = msg[3].decode("ascii", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            self.refused += 1
            # A public key is no secret: naming it tells the operator which file is missing.
            self.refusals.warning(
                f"refused:{self._peer}", "refused a CURVE client at %s: its public key %s is "
                "not in %s (%s) — copy that client's .key file there to admit it",
                self._peer, zmq.utils.z85.encode(client_key).decode(), self.directory,
                reason.decode("ascii", "replace"))
        return allowed, reason

    def check(self, sock: zmq.Socket, endpoint: str, now: float | None = None) -> bool:
        """Re-read the keys if the directory changed; after a key was removed, drop every
        connection on `endpoint` so each client passes ZAP again. Call it from the thread that
        owns `sock`; cheap when nothing changed. True when connections were dropped."""
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return False
        self._next_check = now + KEYS_CHECK_INTERVAL_S
        signature = _keys_signature(self.directory)
        if signature == self._signature:
            return False
        before = set(self.certs.get("*", {}))
        self._signature = signature
        after = self.load()
        self.refusals.recovered()
        removed = before - after
        self.server_log.info("authorised keys in %s changed: %d admitted (%d added, %d removed)",
                             self.directory, len(after), len(after - before), len(removed))
        if not removed:
            return False
        self.server_log.warning("%d key(s) removed from %s: ending every connection on %s so "
                                "that each client is checked again", len(removed),
                                self.directory, endpoint)
        rebind(sock, endpoint)
        return True


def rebind(sock: zmq.Socket, endpoint: str, timeout: float = REBIND_TIMEOUT_S) -> None:
    """Unbind `endpoint` (which closes every connection accepted on it) and bind it again."""
    sock.unbind(endpoint)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:  # the old listener closes asynchronously
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def secure_server(socket: zmq.Socket, keys: CurveServer, context: zmq.Context,
                  server_log: logging.Logger | None = None) -> ServerAuth:
    """Make `socket` a CURVE server that admits only keys in `authorized_keys_dir`.

    Returns the running ZAP authenticator; the socket's owner calls its `check(sock,
    endpoint)` now and then to follow changes to the directory, and stops it when the socket
    closes.
    """
    if zmq.pyzmq_version_info() < CURVE_SERVER_PYZMQ:
        raise MissingDependency(
            f"a CURVE server (a node or proxy with keys) needs pyzmq 25 or newer, and this is "
            f"pyzmq {zmq.pyzmq_version()}: pip install 'pyzmq>=25' in its venv")
    public, secret = _load(Path(keys.secret_key_file), need_secret=True)
    if not Path(keys.authorized_keys_dir).is_dir():
        raise ConfigError(str(keys.authorized_keys_dir), "authorised keys directory not found")
    auth = ServerAuth(context, Path(keys.authorized_keys_dir), server_log)
    auth.start()
    auth.load()
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    if socket not in _watches:
        _watches[socket] = HandshakeWatch(socket, None, server_log or log)
    return auth


def secure_client(socket: zmq.Socket, keys: CurveClient,
                  client_log: logging.Logger | None = None, endpoint: str | None = None,
                  *, watch: bool = True) -> None:
    """Make `socket` a CURVE client of the server whose public key is given; why a handshake
    fails is logged once per endpoint (see `HandshakeWatch`), naming the key files used for
    `endpoint` when given (one socket may use other keys for other endpoints).

    `watch=False` for a socket whose owner already monitors it (a socket has one monitor) and
    reports handshakes itself with `handshake_failure()`."""
    public, secret = _load(Path(keys.secret_key_file), need_secret=True)
    server_public, _ = _load(Path(keys.server_public_key_file), need_secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public
    if not watch:
        return
    if socket not in _watches:
        _watches[socket] = HandshakeWatch(socket, keys, client_log or log)
    if endpoint is not None:
        _watches[socket].keys_by_endpoint[endpoint] = keys


_watches: weakref.WeakKeyDictionary[zmq.Socket, HandshakeWatch] = weakref.WeakKeyDictionary()
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def handshake_failure(event: int, value: int, keys: CurveClient | None) -> str | None:
    """Why a CURVE handshake failed, naming the side to fix; None for success.

    `keys` is the client's; None on the server side, whose refusals by ZAP are logged by
    `ServerAuth` with the peer's address instead."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return None
    if keys is None:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return None
        return ("a client failed the CURVE handshake: it most likely holds a wrong public key "
                f"for this node — give it this node's .key file (event 0x{event:x}, {value})")
    mine, theirs = keys.secret_key_file, keys.server_public_key_file
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (f"the node refused this client's key ({mine}; ZAP status {value}): copy this "
                "client's public .key file into the node's authorized_keys_dir")
    # The node cannot read a HELLO sealed for another key, and closes the connection without
    # a word (no detail here); a node without CURVE fails the mechanism (protocol error).
    return (f"the node did not complete the handshake: the server public key file ({theirs}) "
            "is most likely not the node's, or the node does not use CURVE "
            f"(event 0x{event:x}, {value})")


class HandshakeWatch:
    """Reads a client socket's monitor on a small thread: logs once per endpoint why its CURVE
    handshake failed, and again after it succeeded. Ends when the socket closes."""

    def __init__(self, sock: zmq.Socket, keys: CurveClient | None, watch_log: logging.Logger) -> None:
        """`keys` None watches a server socket."""
        self.keys = keys
        self.keys_by_endpoint: dict[str, CurveClient] = {}
        self.failures = LogOnce(watch_log)
        self.log = watch_log
        self.last: dict[str, str | None] = {}
        self._monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._thread = threading.Thread(target=self._run, name="camfabric-handshake-watch",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        monitor = self._monitor
        try:
            while True:
                if not monitor.poll(1000):
                    if monitor.closed:
                        return
                    continue
                event: dict[str, Any] = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                endpoint = event["endpoint"].decode("ascii", "replace")
                keys = self.keys_by_endpoint.get(endpoint, self.keys)
                reason = handshake_failure(event["event"], event["value"], keys)
                self.last[endpoint] = reason
                if reason is None and self.keys is None:
                    continue  # a server sees many clients: one success proves nothing of others
                if reason is None:
                    if self.failures.recovered(endpoint):
                        self.log.info("CURVE handshake with %s succeeded", endpoint)
                else:
                    self.failures.warning(endpoint, "CURVE handshake with %s failed: %s",
                                          endpoint, reason)
        except zmq.ZMQError:
            return  # the context is going away
        finally:
            monitor.close(linger=0)


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write `name.key` (public) and `name.key_secret` into `directory`; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)
