"""Uploads the newest JPEG of each configured camera to Prusa Connect at a fixed interval.

    config.py       the [prusa_connect] section (cameras, tokens, limits)
    client.py       the HTTP contract with Connect and its error classes
    fingerprint.py  per-camera fingerprints, made once and kept in a state file
    uploader.py     SnapshotUploader: one camera's schedule, freshness checks and backoff
    service.py      UploaderService: a worker thread per camera, the fabric, the status
    main.py         the `camfabric prusa-connect` subcommand

The user's guide is docs/prusa-connect.md.
"""

from .client import (
    ConnectClient,
    ConnectError,
    FingerprintRejected,
    PermanentError,
    RequestRejected,
    TokenRejected,
    TransientError,
)
from .config import CameraUpload, PrusaConnectConfig, load_config
from .fingerprint import FingerprintError, FingerprintStore
from .service import UploaderService
from .uploader import SnapshotUploader

__all__ = [
    "CameraUpload",
    "ConnectClient",
    "ConnectError",
    "FingerprintError",
    "FingerprintRejected",
    "FingerprintStore",
    "PermanentError",
    "PrusaConnectConfig",
    "RequestRejected",
    "SnapshotUploader",
    "TokenRejected",
    "TransientError",
    "UploaderService",
    "load_config",
]
