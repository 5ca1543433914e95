"""`camfabric keys`: write a CURVE key pair for a node or a client of the fabric, or check
one (`camfabric keys check`) and say which side is wrong."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from camfabric.protocol.link import configure_link
from camfabric.protocol.security import HANDSHAKE_EVENTS, CurveClient, generate_keypair, handshake_failure
from camfabric.runtime.errors import CamfabricError

HELP = "write a CURVE key pair (for a node beyond loopback, or one of its clients), or check one"

DESCRIPTION = """\
Write NAME.key (public) and NAME.key_secret (secret, mode 600) into DIR.

A node publishing beyond loopback holds its own secret key and a directory of the public
keys of the clients allowed to subscribe:

  camfabric keys /etc/camfabric/keys --name cell        # on the node
  camfabric keys ~/.camfabric --name gateway             # on each client
  # copy the client's gateway.key into the node's authorized directory, and the node's
  # cell.key to the client, then in the node's config:
  [node.curve]
  secret_key_file = "/etc/camfabric/keys/cell.key_secret"
  authorized_keys_dir = "/etc/camfabric/authorized"

The node re-reads authorized_keys_dir within a second of a change; a key removed there also
ends that client's connection.

Check keys, and say which side is wrong:

  camfabric keys check --secret-key-file ~/.camfabric/gateway.key_secret \
      --server-public-key-file ~/.camfabric/cell.key tcp://10.0.0.5:5550   # as a client
  camfabric keys check --authorized-keys-dir /etc/camfabric/authorized \
      --secret-key-file /etc/camfabric/keys/cell.key_secret                # on the node
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR|check", type=Path,
                        help="folder to write the key files into, or `check`")
    parser.add_argument("endpoint", nargs="?", metavar="ENDPOINT",
                        help="with check: the node to try a handshake with")
    parser.add_argument("--secret-key-file", type=Path, help="with check: this side's .key_secret")
    parser.add_argument("--server-public-key-file", type=Path,
                        help="with check: the node's public .key (client side)")
    parser.add_argument("--authorized-keys-dir", type=Path,
                        help="with check: the node's folder of admitted client keys")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="with check: seconds to wait for the handshake (default 5)")
    parser.add_argument("--name", default=socket.gethostname(),
                        help="base name of the key files (default: this host's name)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing key pair of that name")


def run(args: argparse.Namespace) -> int:
    if str(args.dir) == "check":
        return check(args)
    if args.endpoint is not None:
        raise CamfabricError(f"unexpected argument {args.endpoint!r} (only `check` takes an endpoint)")
    directory: Path = args.dir.expanduser()
    name: str = args.name
    if not name or "/" in name or name.startswith("."):
        raise CamfabricError(f"--name {name!r} is not usable as a file name")
    existing = [p for p in (directory / f"{name}.key", directory / f"{name}.key_secret") if p.exists()]
    if existing and not args.force:
        raise CamfabricError(f"{existing[0]} already exists; pass --force to replace the key pair "
                             "(clients holding the old public key will be refused)")
    public, secret = generate_keypair(directory, name)
    print(f"public key: {public}")
    print(f"secret key: {secret}   (mode 600; never copy it off this machine)")
    print()
    print("As a node (server), in its config:")
    print("  [node.curve]")
    print(f'  secret_key_file = "{secret.resolve()}"')
    print('  authorized_keys_dir = "<folder holding the public keys of allowed clients>"')
    print(f"  and give {public.name} to each client (their server public key file).")
    print("As a client (gateway, uploader, robot code):")
    print(f"  copy {public.name} into the node's authorized_keys_dir; connect with {secret.name}")
    print("  as your secret key file and the node's public .key file as the server key.")
    return 0


def _public_of(path: Path, need_secret: bool) -> tuple[bytes | None, str]:
    """(z85 public key, '') from a certificate file, or (None, what is wrong with it)."""
    if not path.is_file():
        return None, f"{path} not found"
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        return None, f"{path} is not a ZeroMQ certificate ({exc})"
    if need_secret:
        if not secret:
            return None, f"{path} holds no secret key (use the .key_secret file, not the .key)"
        if zmq.curve_public(secret) != public:
            return None, f"{path}: its public key does not belong to its secret key"
    return public, ""


def check(args: argparse.Namespace) -> int:
    """`camfabric keys check`: local files first, then (with an endpoint) a real handshake."""
    problems: list[str] = []
    mine = theirs = None
    if args.secret_key_file is not None:
        mine, why = _public_of(args.secret_key_file.expanduser(), need_secret=True)
        problems += [f"this side: {why}"] if why else []
        if mine:
            print(f"this side's public key: {mine.decode()}")
    if args.server_public_key_file is not None:
        theirs, why = _public_of(args.server_public_key_file.expanduser(), need_secret=False)
        problems += [f"server key: {why}"] if why else []
    if args.authorized_keys_dir is not None:
        directory = args.authorized_keys_dir.expanduser()
        if not directory.is_dir():
            problems.append(f"node side: {directory} is not a directory")
        else:
            admitted = []
            for path in sorted(directory.glob("*.key")):
                public, why = _public_of(path, need_secret=False)
                if why:
                    problems.append(f"node side: {why} (this client key is ignored)")
                else:
                    admitted.append(public)
            print(f"{directory}: {len(admitted)} client key(s) admitted")
    if args.endpoint is not None and not problems:
        if args.secret_key_file is None or args.server_public_key_file is None:
            raise CamfabricError("check ENDPOINT needs --secret-key-file and --server-public-key-file")
        verdict = _handshake(args.endpoint, CurveClient(args.secret_key_file.expanduser(),
                                                        args.server_public_key_file.expanduser()),
                             args.timeout)
        if verdict:
            problems.append(verdict)
        else:
            print(f"{args.endpoint}: CURVE handshake succeeded; the node admits this client")
    for problem in problems:
        print(f"WRONG: {problem}")
    if not problems:
        print("keys look right")
    return 1 if problems else 0


def _handshake(endpoint: str, keys: CurveClient, timeout: float) -> str:
    """'' when a CURVE handshake with `endpoint` succeeds, else which side is wrong."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    configure_link(sub)
    try:
        public, secret = zmq.auth.load_certificate(str(keys.secret_key_file))
        sub.curve_secretkey, sub.curve_publickey = secret, public
        sub.curve_serverkey = zmq.auth.load_certificate(str(keys.server_public_key_file))[0]
        monitor = sub.get_monitor_socket(HANDSHAKE_EVENTS | zmq.EVENT_CONNECTED)
        sub.connect(endpoint)
        connected = False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not monitor.poll(int(left * 1000) + 1):
                break
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_CONNECTED:
                connected = True
                continue
            reason = handshake_failure(event["event"], event["value"], keys)
            return "" if reason is None else f"{endpoint}: {reason}"
        if not connected:
            return f"{endpoint}: nothing answered within {timeout:g} s (address, port or firewall)"
        return (f"{endpoint}: connected, but no handshake within {timeout:g} s (is a fabric node "
                "listening there?)")
    finally:
        sub.close(linger=0)
        context.destroy(linger=0)
