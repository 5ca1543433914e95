"""The root of camfabric's errors, and the configuration error every part's loader raises.

    CamfabricError                 every error camfabric raises on purpose
    └── ConfigError                a configuration file or value that cannot be used;
                                   `.path` names the key ("node.cameras[1].fps")

Each part adds its own below the root: the wire format's in protocol/errors.py, a camera's in
capture_node/errors.py. Errors from libraries underneath are translated at the seam with
`raise ... from exc`, so callers catch ours only.
"""

from __future__ import annotations

import re

# What a pasted key looks like: a Google API key ("AIza" + 35), or a long unbroken run of
# letters and digits mixing upper case, lower case and digits (tokens, bearer keys). Runs are
# split at - and _ first, so a name made of words (a /dev/v4l/by-id device, a model name) is
# never taken for a key.
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
_LONG_RUN = re.compile(r"[0-9A-Za-z+=]{16,}")
HIDDEN = "[value not shown: it looks like a key]"


class CamfabricError(Exception):
    """Root of every error camfabric raises on purpose."""


def looks_like_key(text: str) -> bool:
    """True when `text` holds something shaped like an API key or token."""
    return redact_keys(text) != text


def redact_keys(text: str) -> str:
    """`text` with every run shaped like an API key or token replaced by HIDDEN."""
    text = _GOOGLE_KEY.sub(HIDDEN, text)

    def keyish(match: re.Match[str]) -> str:
        run = match.group(0)
        mixed = (any(c.isupper() for c in run) and any(c.islower() for c in run)
                 and any(c.isdigit() for c in run))
        return HIDDEN if mixed else run

    return _LONG_RUN.sub(keyish, text)


class ConfigError(CamfabricError, ValueError):
    """A configuration that cannot be used. `path` is the dotted key path, '' for the file.

    The message never shows a value shaped like a key (`redact_keys`): a key pasted into the
    wrong setting is still a secret."""

    def __init__(self, path: str, message: str) -> None:
        message = redact_keys(message)
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
