"""The `camfabric` command: one subcommand per process of the fabric.

Each subcommand lives in its own module, which provides `HELP` (one line), `DESCRIPTION`,
`add_arguments(parser)` and `run(args) -> int`. Every subcommand takes `--config FILE` and
`--log-level`. A configuration error exits with status 2 and names the key; nothing starts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .protocol.errors import CamfabricError, ConfigError
from .runtime import setup_logging

SUBCOMMANDS = {
    "node": "camfabric.capture_node.main",
    "gateway": "camfabric.gateway.main",
    "prusa-connect": "camfabric.subscribers.prusa_connect.main",
    "tracker": "camfabric.subscribers.tracker.main",
    "proxy": "camfabric.proxy",
    "keys": "camfabric.keys",
    "moonraker": "camfabric.moonraker",
    "demo": "camfabric.demo",
}


def _available() -> dict[str, object]:
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand this installation provides."""
    parser = argparse.ArgumentParser(
        prog="camfabric",
        description="A ZeroMQ publish/subscribe camera fabric. Run `camfabric demo` to try it.",
    )
    parser.add_argument("--version", action="version", version=f"camfabric {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available().items():
        sub = subparsers.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--config", metavar="FILE", help="TOML configuration file")
        sub.add_argument("--log-level", default="INFO",
                         choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `camfabric` command."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        print(f"camfabric {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except CamfabricError as exc:
        logging.getLogger("camfabric").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
