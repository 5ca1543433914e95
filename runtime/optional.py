"""The libraries that only some parts need, and what to install when one is missing.

`pip install camfabric` brings what robot code needs (the protocol and the HTTP client:
pyzmq, msgpack, numpy, requests). The services add falcon, Waitress and prometheus-client
(`camfabric[services]`), and OpenCV is whichever flavour the machine has — `camfabric[opencv]`
installs the headless wheel where there is none. A missing one is named with its remedy
instead of surfacing as a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CamfabricError

OPENCV_HINT = ("pip install 'camfabric[opencv]', or any OpenCV wheel (opencv-python, "
               "opencv-contrib-python), or the distribution's python3-opencv")
SERVICES_HINT = "pip install 'camfabric[services]'"

# top-level module → how to get it
INSTALL_HINTS = {
    "cv2": OPENCV_HINT,
    "falcon": SERVICES_HINT,
    "waitress": SERVICES_HINT,
    "prometheus_client": SERVICES_HINT,
}


class MissingDependency(CamfabricError, ImportError):
    """A library this part needs is not installed; the message says how to install it."""


def missing_dependency(module: str, needed_for: str) -> MissingDependency | None:
    """The error to raise for `module` (a name ModuleNotFoundError reported) missing while
    doing `needed_for`, or None when it is not one of the optional libraries."""
    top = module.split(".")[0]
    hint = INSTALL_HINTS.get(top)
    if hint is None:
        return None
    return MissingDependency(f"{needed_for} needs {top}, which is not installed here: {hint}")


def require(module: str, needed_for: str) -> ModuleType:
    """Import `module`, or raise MissingDependency naming what to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        error = missing_dependency(exc.name or module, needed_for)
        if error is None:
            raise
        raise error from exc
