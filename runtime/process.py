"""What every camfabric process does at its edges: logging, and stopping on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log lines to stderr, one per event, with the component's logger name."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def stop_event(on_reload: Callable[[], None] | None = None) -> threading.Event:
    """An Event set on SIGINT or SIGTERM (call from the main thread).

    `on_reload`, when given, runs on SIGHUP (e.g. the uploader re-reading its config).
    """
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("camfabric").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if on_reload is not None:
        signal.signal(signal.SIGHUP, lambda _s, _f: on_reload())
    return stop
