"""Camera fingerprints: made once per camera, kept in a state file, never changed.

Connect binds a camera token to the first fingerprint it sees with it and rejects every other
one ("Invalid fingerprint"), so a fingerprint that changed after a reinstall or a lost file
would lock the camera out until it is re-added in Connect. The store therefore refuses to
guess: a state file it cannot read is an error the user resolves, never silently replaced.

The file is `<state_dir>/prusa_connect_fingerprints.json`, a JSON object mapping the fabric
camera id (as a string) to its fingerprint, written atomically with mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path

from ...runtime.errors import CamfabricError

FILE_NAME = "prusa_connect_fingerprints.json"
PREFIX = "camfabric-"

log = logging.getLogger(__name__)


class FingerprintError(CamfabricError):
    """The fingerprint state file cannot be read or written."""


def new_fingerprint() -> str:
    """A fresh fingerprint: 'camfabric-' and 32 random hex digits (42 characters, within 16–64)."""
    return PREFIX + secrets.token_hex(16)


class FingerprintStore:
    """Fingerprints by fabric camera id, persisted under `state_dir`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME
        self._lock = threading.Lock()

    def get(self, cam: int) -> str:
        """The fingerprint of camera `cam`, creating and saving one on first use."""
        key = str(int(cam))
        with self._lock:
            known = self._read()
            if key in known:
                return known[key]
            fingerprint = new_fingerprint()
            known[key] = fingerprint
            self._write(known)
            log.info("generated a new Connect fingerprint for camera %s (saved in %s)", key, self.path)
            return fingerprint

    def check(self) -> None:
        """Raise FingerprintError when the state file exists but cannot be used; writes nothing."""
        with self._lock:
            self._read()

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise FingerprintError(f"cannot read fingerprint file {self.path}: {exc}; set "
                                   "prusa_connect.state_dir to a directory this user can write") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FingerprintError(
                f"fingerprint file {self.path} is not valid JSON ({exc}); restore it, or delete it "
                "and re-add the cameras in Prusa Connect (their tokens are bound to the old fingerprints)"
            ) from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and 16 <= len(v) <= 64 for k, v in data.items()
        ):
            raise FingerprintError(
                f"fingerprint file {self.path} does not map camera ids to fingerprints of 16-64 "
                "characters; restore it, or delete it and re-add the cameras in Prusa Connect"
            )
        return data

    def _write(self, data: dict[str, str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise FingerprintError(
                f"cannot write fingerprint file {self.path}: {exc}; set prusa_connect.state_dir "
                "to a writable directory"
            ) from exc
