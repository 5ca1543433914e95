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
    model = "gemini-2.5-flash"
    api_key_env = "GEMINI_API_KEY"
    requests_per_minute = 10

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

import cv2

from ...config import bounded, check_unique, load_section
from ...protocol.errors import ConfigError
from ...protocol.publisher import DEFAULT_ENDPOINT

DEFAULT_PUBLISH = "tcp://127.0.0.1:5560"
Role = Literal["overhead", "side_profile", "end_effector"]
DetectorKind = Literal["aruco", "gemini"]


@dataclass(frozen=True, slots=True)
class GeminiConfig:
    """The Gemini detector's endpoint, key and the project's request budget."""

    model: str = "gemini-2.5-flash"
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: str = field(default="", repr=False)  # prefer api_key_env: keys in files leak
    api_key_env: str = "GEMINI_API_KEY"
    requests_per_minute: int = bounded(10, 1, 100_000)
    requests_per_day: int = bounded(250, 1, 100_000_000)
    timeout_s: float = bounded(20.0, 0.1, 600.0)
    backoff_s: float = bounded(5.0, 0.01, 3600.0)  # first wait after a 5xx or a timeout
    max_backoff_s: float = bounded(300.0, 0.01, 86400.0)
    prompt: str = ""  # extra instructions appended to the built-in prompt

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", f"must start with http:// or https://, got {self.base_url!r}")
        if not self.model or "/" in self.model:
            raise ConfigError("model", f"must be a model name such as 'gemini-2.5-flash', got {self.model!r}")

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

    match_distance_mm: float = bounded(60.0, 0.1, 10_000.0)  # same label closer than this: one object
    smoothing: float = bounded(0.6, 0.01, 1.0)  # weight of a new observation (1: no smoothing)
    stale_s: float = bounded(6.0, 0.1, 86400.0)
    remove_s: float = bounded(30.0, 0.1, 86400.0)
    side_match_px: float = bounded(40.0, 1.0, 10_000.0)  # side detection to object, in pixels

    def __post_init__(self) -> None:
        if self.remove_s < self.stale_s:
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
