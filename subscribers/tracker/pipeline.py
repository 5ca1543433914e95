"""One camera's way from a frame to the world model: find markers, calibrate, detect, map.

    frame ─► MarkerFinder ─► reference markers ─► TablePlane / SideProjection (re)fit
                         └─► detector (aruco: the labelled markers; gemini: boxes) ─►
        overhead:      pixels → table mm (parallax-corrected)  ─► WorldModel.observe_plane
        side_profile:  pixels → heights over known (x, y)       ─► WorldModel.observe_heights
        end_effector:  pixels, kept in the camera's own frame   ─► WorldModel.observe_camera_frame

`CameraPipeline.process(image, jpeg, seen, stamp, gate)` is synchronous: the tracker runs one
per camera on that camera's worker thread, and tests call it directly with rendered images.
`seen` is the frame's capture time on this host's monotonic clock, `stamp` on the wall clock:
positions carry the capture time, never the time they were computed. The camera's gate is taken
at send time: by the pipeline before a local (ArUco) detection, by the Gemini detector just
before its request leaves. A pipeline runs one frame at a time (a lock): the side camera's
worker also hands the overhead pipeline the overhead frame of a synchronised pair, detected
without the local gate and only to measure heights at (`extra=True`: ArUco costs nothing), and
the side frame with that frame's capture time (`paired`), so the height is measured at the
x, y of the same moment.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ...protocol.jpeg import encode_jpeg
from ...runtime.logonce import LogOnce
from .config import CameraTracking
from .detectors import Detection, DetectionSkipped
from .detectors.aruco import ArucoDetector, MarkerFinder
from .detectors.gemini import GeminiDetector, GeminiError, GeminiRefused
from .geometry import SideProjection, TablePlane, Undistorter, marker_centre
from .world import HeightSighting, PlaneSighting, WorldModel


class CameraPipeline:
    """Detection and geometry for one camera, plus the counters its status shows."""

    def __init__(self, config: CameraTracking, world: WorldModel, finder: MarkerFinder,
                 detector: ArucoDetector | GeminiDetector, *, log: logging.Logger | None = None) -> None:
        self.config = config
        self.cam = config.key
        self.world = world
        self.finder = finder
        self.detector = detector
        self.log = log or logging.getLogger(__name__)
        undistort = Undistorter(config.camera_matrix, config.distortion)
        refs = {int(k): v for k, v in config.references.items()}
        self.model: TablePlane | SideProjection | None = None
        if config.role == "overhead":
            self.model = TablePlane(refs, undistort, config.camera_position_mm)
        elif config.role == "side_profile":
            self.model = SideProjection(refs, undistort)
        self.frames = 0
        self.detections = 0
        self.last_detection: float | None = None
        self.skipped = 0
        self.retry_at = 0.0  # monotonic
        self.last_error = ""
        self._notes = LogOnce(self.log)
        self._lock = threading.Lock()  # one frame at a time: the finder and the fit are not shared

    @property
    def calibrated(self) -> bool:
        return self.model is None or self.model.calibrated

    @property
    def free(self) -> bool:
        """Whether a detection costs nothing (no request to a paid service)."""
        return not isinstance(self.detector, GeminiDetector)

    def process(self, image: np.ndarray, jpeg: bytes | None, seen: float, stamp: float,
                gate: Any, *, extra: bool = False, paired: tuple[float, float] | None = None
                ) -> list[Detection]:
        """Detect in one frame captured at `seen` (monotonic) / `stamp` (wall) once `gate`
        allows, and update the world; returns the detections ([] when the gate said no).

        `extra=True`, for a free (local) detector: a look outside the camera's turns, taken only
        to measure heights at — no gate, and the sightings only join the objects' tracks (see
        `WorldModel.observe_plane`); `paired`, for a side camera, is the capture time (monotonic, wall) of the
        overhead frame taken together with this one, whose x, y the heights are measured at."""
        local = self.free
        with self._lock:
            extra = extra and local
            if local and not extra:
                wait = gate.reserve()
                if wait:
                    self.skipped += 1
                    return []
                try:
                    return self._process(image, jpeg, seen, stamp, gate, paired, extra)
                finally:
                    gate.done()
            return self._process(image, jpeg, seen, stamp, gate, paired, extra)

    def _process(self, image: np.ndarray, jpeg: bytes | None, seen: float, stamp: float,
                 gate: Any, paired: tuple[float, float] | None, extra: bool) -> list[Detection]:
        self.frames += 1
        h, w = image.shape[:2]
        markers = self.finder.find(image)
        if self.model is not None:
            refs = {i: _centre(c) for i, c in markers.items() if i in self.model.references}
            self.model.fit(refs)
        try:
            if isinstance(self.detector, GeminiDetector):
                if jpeg is None:
                    jpeg = encode_jpeg(image, 90)
                detections = self.detector.detect(jpeg, w, h, gate)
            else:
                detections = self.detector.detect(markers)
        except DetectionSkipped as exc:
            self.skipped += 1
            self.retry_at = exc.retry_at
            self.last_error = getattr(self.detector, "last_error", "") or self.last_error
            return []
        except GeminiRefused as exc:
            self.last_error = str(exc)
            return []
        except GeminiError as exc:
            self.last_error = str(exc)
            return []
        if self.model is not None:
            refs = set(self.model.references)
            detections = [d for d in detections if d.marker_id not in refs]
        if detections and not extra:
            self.detections += len(detections)
            self.last_detection = stamp
        self._to_world(detections, seen, stamp, paired, extra)
        return detections

    def _to_world(self, detections: list[Detection], seen: float, stamp: float,
                  paired: tuple[float, float] | None, extra: bool) -> None:
        role = self.config.role
        if role == "end_effector":
            items = [{"label": d.label, "pixel": [round(d.pixel[0], 1), round(d.pixel[1], 1)],
                      "confidence": d.confidence, "frame": "end_effector",
                      **({"box": [round(v, 1) for v in d.box]} if d.box else {})} for d in detections]
            self.world.observe_camera_frame(self.cam, "end_effector", items, seen, stamp)
            return
        if not self.calibrated:
            self._note("uncalibrated", f"camera {self.cam} ({role}) not calibrated yet: its reference "
                       f"markers {sorted(self.model.references)} are not in view")
            return
        self.last_error = ""
        if role == "overhead":
            plane: TablePlane = self.model  # type: ignore[assignment]
            pixels = np.array([d.pixel for d in detections]).reshape(-1, 2)
            table = plane.to_table(pixels) if len(pixels) else pixels
            sightings = [PlaneSighting(d.label, (float(t[0]), float(t[1])), d.pixel, d.confidence,
                                       plane.correct_parallax)
                         for d, t in zip(detections, table, strict=True)]
            self.world.observe_plane(self.cam, sightings, seen, stamp, track_only=extra)
        else:
            side: SideProjection = self.model  # type: ignore[assignment]
            offset = self.config.marker_top_offset_mm
            sightings = []
            for d in detections:
                point = d.pixel if d.marker_id is not None else d.top
                extra = offset if d.marker_id is not None else 0.0

                def height_at(x: float, y: float, point: Any = point,
                              extra: float = extra) -> tuple[float, float]:
                    z, residual = side.height_at(point, x, y)
                    return z + extra, residual

                sightings.append(HeightSighting(d.label, d.pixel, height_at, d.confidence))
            self.world.observe_heights(self.cam, sightings, seen, stamp, paired=paired)

    def _note(self, kind: str, message: str) -> None:
        self.last_error = message
        self._notes.warning(kind, "%s", message)

    def status(self, next_allowed: float | None) -> dict[str, Any]:
        """This camera's entry in the tracker's Status message; `next_allowed` (wall clock)."""
        calls = self.detector.calls
        refused = getattr(self.detector, "refused", "")
        state: dict[str, Any] = {
            "role": self.config.role, "detector": self.detector.kind, "frames": self.frames,
            "detections": self.detections, "last_detection": self.last_detection, "calls": calls,
            "skipped": self.skipped, "calibrated": self.calibrated, "next_allowed": next_allowed,
            "interval_s": self.config.interval_s, "last_error": refused or self.last_error,
            "stopped": bool(refused),
        }
        if isinstance(self.model, TablePlane) and self.model.calibrated:
            state["calibration_error_mm"] = round(self.model.error_mm, 3)
        if isinstance(self.model, SideProjection) and self.model.calibrated:
            state["calibration_error_px"] = round(self.model.error_px, 3)
        return state


def _centre(corners: np.ndarray) -> tuple[float, float]:
    c = marker_centre(corners)
    return float(c[0]), float(c[1])
