"""The `camfabric` command: one subcommand per process of the fabric.

Each subcommand lives in its own module, which provides `HELP` (one line), `DESCRIPTION`,
`add_arguments(parser)` and `run(args) -> int`. Every subcommand takes `--config FILE` and
`--log-level`. A configuration error exits with status 2 and names the key; nothing starts.

Only the module of the subcommand being run is imported: `camfabric keys --help` loads neither
OpenCV nor the HTTP server. The one-line summaries for `camfabric --help` live here for that
reason, and a test checks that they match each module's `HELP`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from . import __version__

# name → (module, one-line summary shown by `camfabric --help`)
SUBCOMMANDS = {
    "node": ("camfabric.capture_node.main",
             "run a capture node: own the cameras, publish them on the fabric"),
    "gateway": ("camfabric.gateway.main",
                "serve every camera on the fabric over HTTP (JPEG, MJPEG, JSON, dashboard)"),
    "prusa-connect": ("camfabric.subscribers.prusa_connect.main", "upload camera snapshots to Prusa Connect"),
    "tracker": ("camfabric.subscribers.tracker.main",
                "track objects on the workspace (ArUco or Gemini) and publish the world model"),
    "timelapse": ("camfabric.subscribers.timelapse.main",
                  "record print timelapses: a frame per layer (or every N s) from Moonraker's print state"),
    "proxy": ("camfabric.proxy", "forward many nodes' fabric through one endpoint"),
    "keys": ("camfabric.keys",
             "write a CURVE key pair (for a node beyond loopback, or one of its clients), or check one"),
    "moonraker": ("camfabric.moonraker",
                  "print (or register) Moonraker [webcam] sections for the gateway's cameras"),
    "demo": ("camfabric.demo", "run three synthetic cameras, the gateway and the tracker on loopback"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camfabric",
        description="A ZeroMQ publish/subscribe camera fabric. Run `camfabric demo` to try it.",
        epilog="`camfabric COMMAND --help` describes a command and its configuration.",
    )
    parser.add_argument("--version", action="version", version=f"camfabric {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, summary) in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def _command_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"camfabric {name}", description=getattr(module, "DESCRIPTION", module.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
    module.add_arguments(parser)
    return parser


def load_command(name: str) -> ModuleType:
    """The module that implements subcommand `name` (imported now, and only now)."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(name: str) -> argparse.ArgumentParser:
    """The full argument parser of subcommand `name`."""
    return _command_parser(name, load_command(name))


@contextmanager
def _ctrl_c_held_until_imported() -> Iterator[None]:
    """Hold a Ctrl-C that comes while a command's modules import, and raise it once they have
    (main() then exits 130): raised in the middle of an import, it can surface as another error
    with a traceback (a TypeError out of the ssl module, seen on a loaded machine)."""
    pressed: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: pressed.append(signum))
    except ValueError:  # not the main thread: signals are not ours to hold
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `camfabric` command."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command installed its own handler
        return 130


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        _top_parser().parse_args(argv)  # --help, --version or a usage error: exits
        return 2
    name = argv[0]
    try:
        with _ctrl_c_held_until_imported():
            module = load_command(name)
    except ModuleNotFoundError as exc:
        from camfabric.runtime.optional import missing_dependency

        error = missing_dependency(exc.name or "", f"camfabric {name}")
        if error is None:
            raise
        print(f"camfabric {name}: {error}", file=sys.stderr)
        return 2
    args = _command_parser(name, module).parse_args(argv[1:])
    args.command = name

    from camfabric.protocol.errors import CamfabricError, ConfigError
    from camfabric.runtime.process import setup_logging

    setup_logging(args.log_level)
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"camfabric {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except CamfabricError as exc:
        logging.getLogger("camfabric").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
