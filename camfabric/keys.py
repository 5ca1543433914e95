"""`camfabric keys`: write a CURVE key pair for a node or a client of the fabric."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from .protocol.errors import CamfabricError
from .protocol.security import generate_keypair

HELP = "write a CURVE key pair (for a node beyond loopback, or one of its clients)"

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
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help="folder to write the key files into")
    parser.add_argument("--name", default=socket.gethostname(),
                        help="base name of the key files (default: this host's name)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing key pair of that name")


def run(args: argparse.Namespace) -> int:
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
