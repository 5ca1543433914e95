"""The `[tracker]` section: which cameras to watch, how often, with which detector, and how
each camera is calibrated.

    [tracker]
    nodes = ["tcp://127.0.0.1:5550"]
    publish = "tcp://127.0.0.1:5560"
    markers = { "20" = "red_block", "21" = "green_block" }     # ArUco id -> label

    [[tracker.cameras]]
    id = 0
    role = "overhead"
    interval_s = 2.0
    references = { "0" = [30, 30], "1" = [370, 30], "2" = [370, 270], "3" = [30, 270] }

    [[tracker.cameras]]
    id = 2
    role = "side_profile"
    detector = "gemini"
    references = { "4" = [70, 320, 50], ... }                   # >= 6, not all in one plane

    [tracker.gemini]
    model = "gemini-3.5-flash-lite"           # the default; see docs/tracker.md
    api_key_env = "GEMINI_API_KEY"
    requests_per_minute = 10
    requests_per_day = 20                     # the free tier's; raise it on a paid tier

A camera's `role` says what its pixels mean (the camera id alone never does): `overhead`
pixels map to table millimetres, `side_profile` pixels give heights, `end_effector` pixels
stay in that camera's own frame.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import cv2

from ...protocol.publisher import DEFAULT_ENDPOINT
from ...protocol.security import is_loopback_host
from ...runtime.config import bounded, check_unique, load_section
from ...runtime.errors import ConfigError, looks_like_key

DEFAULT_PUBLISH = "tcp://127.0.0.1:5560"
Role = Literal["overhead", "side_profile", "end_effector"]
DetectorKind = Literal["aruco", "gemini"]
PAID_DETECTORS = frozenset({"gemini"})
MIN_PAID_INTERVAL_S = 2.0  # the seed's rule: at most one frame per camera per 2 s to a paid API
# The replacement Google names for gemini-2.5-flash, which is retired
# (https://ai.google.dev/gemini-api/docs/deprecations).
DEFAULT_MODEL = "gemini-3.5-flash-lite"


def default_state_dir() -> Path:
    """Where trackers keep the budget state they share: $XDG_STATE_HOME/camfabric."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "camfabric"


@dataclass(frozen=True, slots=True)
class GeminiConfig:
    """The Gemini detector's endpoint, key and the project's request budget."""

    model: str = DEFAULT_MODEL
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: str = field(default="", repr=False)  # prefer api_key_env: keys in files leak
    api_key_env: str = "GEMINI_API_KEY"
    requests_per_minute: int = bounded(10, 1, 100_000)
    # The free tier's daily limit; raise it to your project's on a paid tier.
    requests_per_day: int = bounded(20, 1, 100_000_000)
    timeout_s: float = bounded(30.0, 0.1, 600.0)
    backoff_s: float = bounded(5.0, 0.01, 3600.0)  # first wait after a 5xx or a timeout
    max_backoff_s: float = bounded(300.0, 0.01, 86400.0)
    prompt: str = ""  # extra instructions appended to the built-in prompt
    # Where trackers of this host keep the budget state they share (default: default_state_dir()).
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("base_url", "must be an https:// URL such as "
                              "https://generativelanguage.googleapis.com")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ConfigError("base_url", "must be https:// (the API key would travel in clear); "
                              "plain http:// is allowed only to a loopback address")
        if self.max_backoff_s < self.backoff_s:
            raise ConfigError("max_backoff_s", f"must be >= backoff_s ({self.backoff_s})")
        if looks_like_key(self.model):
            raise ConfigError("model", "holds what looks like an API key, not a model name (value "
                              "not shown): put the key in tracker.gemini.api_key or the "
                              f"environment variable {self.api_key_env}, and name a model such "
                              f"as {DEFAULT_MODEL!r}")
        if not self.model or "/" in self.model:
            raise ConfigError("model", f"must be a model name such as {DEFAULT_MODEL!r}, got {self.model!r}")

    def resolve_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The API key from the config, else from the environment variable; '' if neither."""
        env = os.environ if environ is None else environ
        return self.api_key or env.get(self.api_key_env, "")


@dataclass(frozen=True, slots=True)
class CameraTracking:
    """One camera the tracker watches: its role, detector, rate limit and calibration."""

    id: int = bounded(lo=0)
    role: Role = "overhead"
    detector: DetectorKind = "aruco"
    interval_s: float = bounded(2.0, 0.05, 86400.0)
    # Calibration: reference marker id -> known centre in mm. Overhead: [x, y] on the table
    # (>= 4); side_profile: [x, y, z] (>= 6, not all in one plane).
    references: dict[str, list[float]] = field(default_factory=dict)
    camera_matrix: list[list[float]] | None = None  # 3x3 intrinsics; with `distortion`
    distortion: list[float] = field(default_factory=list)  # k1, k2, p1, p2[, k3, ...]
    # Overhead only: where the camera is (mm); corrects the parallax of tall objects.
    camera_position_mm: list[float] | None = None
    # Side only: how far an object's top lies above the centre of its front marker.
    marker_top_offset_mm: float = 0.0
    labels: list[str] = field(default_factory=list)  # gemini: what to look for

    def __post_init__(self) -> None:
        want = 3 if self.role == "side_profile" else 2
        for key, point in self.references.items():
            if not key.isdigit():
                raise ConfigError(f"references.{key}", "reference keys are ArUco marker ids (integers)")
            if self.role == "overhead" and len(point) == 3 and point[2] == 0:
                point = point[:2]
            if len(point) != want or not all(math.isfinite(v) for v in point):
                shape = "[x, y, z]" if want == 3 else "[x, y]"
                raise ConfigError(f"references.{key}", f"expected {shape} in mm, got {point!r}")
        if self.role == "overhead" and self.references and len(self.references) < 4:
            raise ConfigError("references", f"an overhead camera needs >= 4 reference markers, "
                              f"got {len(self.references)}")
        if self.role == "side_profile" and self.references and len(self.references) < 6:
            raise ConfigError("references", f"a side camera needs >= 6 reference markers "
                              f"(not all in one plane), got {len(self.references)}")
        matrix = self.camera_matrix
        if matrix is not None and (len(matrix) != 3 or any(len(row) != 3 for row in matrix)):
            raise ConfigError("camera_matrix", "expected a 3x3 matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
        if self.distortion and self.camera_matrix is None:
            raise ConfigError("distortion", "distortion coefficients need camera_matrix too")
        if self.distortion and len(self.distortion) not in (4, 5, 8, 12, 14):
            raise ConfigError("distortion", "expected 4, 5, 8, 12 or 14 coefficients, "
                              f"got {len(self.distortion)}")
        if self.camera_position_mm is not None:
            if self.role != "overhead":
                raise ConfigError("camera_position_mm", "only an overhead camera uses camera_position_mm")
            if len(self.camera_position_mm) != 3 or self.camera_position_mm[2] <= 0:
                raise ConfigError("camera_position_mm", "expected [x, y, z] in mm, z > 0 (above the table)")

    @property
    def key(self) -> str:
        """The camera id as it appears in Status and `pixel` maps: "0", "1", …"""
        return str(self.id)


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """How detections become tracked objects."""

    # Same label closer than this to where an object is estimated to be: one object.
    match_distance_mm: float = bounded(60.0, 0.1, 10_000.0)
    # The constant-velocity filter (see motion.py): a detection's position noise, how hard
    # objects accelerate between detections, how fast a newly seen object may be moving.
    measurement_mm: float = bounded(0.5, 0.0, 1000.0)
    acceleration_mm_s2: float = bounded(0.5, 0.0, 100_000.0)
    max_speed_mm_s: float = bounded(20.0, 0.0, 100_000.0)
    # Stale once the estimate's 95 % radius passes this (besides `stale_s`).
    max_uncertainty_mm: float = bounded(100.0, 0.1, 100_000.0)
    # Unset: derived from the cameras' effective intervals and the detectors' measured latency.
    stale_s: float | None = bounded(None, 0.1, 86400.0)
    remove_s: float | None = bounded(None, 0.1, 86400.0)
    side_match_px: float = bounded(40.0, 1.0, 10_000.0)  # side detection to object, in pixels

    def __post_init__(self) -> None:
        if self.remove_s is not None and self.stale_s is not None and self.remove_s < self.stale_s:
            raise ConfigError("remove_s", f"must be >= stale_s ({self.stale_s}), got {self.remove_s}")


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """The whole `[tracker]` section."""

    nodes: list[str] = field(default_factory=lambda: [DEFAULT_ENDPOINT])
    publish: str = DEFAULT_PUBLISH
    aruco_dictionary: str = "DICT_4X4_50"
    markers: dict[str, str] = field(default_factory=dict)  # ArUco marker id -> object label
    cameras: tuple[CameraTracking, ...] = ()
    gemini: GeminiConfig = field(default_factory=GeminiConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    status_interval_s: float = bounded(1.0, 0.05, 60.0)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("nodes", "at least one node endpoint is needed")
        if not self.cameras:
            raise ConfigError("cameras", "no cameras to track; add [[tracker.cameras]] with id and role")
        if not hasattr(cv2.aruco, self.aruco_dictionary) or not self.aruco_dictionary.startswith("DICT_"):
            raise ConfigError("aruco_dictionary", f"unknown ArUco dictionary {self.aruco_dictionary!r} "
                              "(e.g. DICT_4X4_50, DICT_6X6_250)")
        for key in self.markers:
            if not key.isdigit():
                raise ConfigError(f"markers.{key}", "marker keys are ArUco marker ids (integers)")
        check_unique([camera.id for camera in self.cameras], "cameras|id", "tracker")
        for i, camera in enumerate(self.cameras):
            if camera.detector in PAID_DETECTORS and camera.interval_s < MIN_PAID_INTERVAL_S:
                raise ConfigError(f"cameras[{i}].interval_s",
                                  f"a {camera.detector} camera may send at most one frame per "
                                  f"{MIN_PAID_INTERVAL_S:g} s; got {camera.interval_s:g}")
            if camera.role != "end_effector" and not camera.references:
                raise ConfigError(f"cameras[{i}].references",
                                  f"a {camera.role} camera needs reference markers to calibrate")
        if any(c.detector == "aruco" for c in self.cameras) and not self.markers:
            raise ConfigError("markers", "aruco cameras need markers = { id = label, … } "
                              "to name what they see")

    def camera(self, cam: int) -> CameraTracking:
        return next(c for c in self.cameras if c.id == cam)

    def gemini_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The Gemini key when a camera uses Gemini; a ConfigError naming where to put it when
        none is set. '' when no camera uses Gemini."""
        if not any(c.detector == "gemini" for c in self.cameras):
            return ""
        key = self.gemini.resolve_key(environ)
        if not key:
            raise ConfigError("tracker.gemini.api_key",
                              f"a camera uses the gemini detector but no API key is set: set "
                              f"tracker.gemini.api_key or the environment variable "
                              f"{self.gemini.api_key_env} (tracker.gemini.api_key_env)")
        return key


def load_tracker_config(path: str | Path | None) -> TrackerConfig:
    """The `[tracker]` section of the TOML file at `path`."""
    return load_section(path, "tracker", TrackerConfig)
