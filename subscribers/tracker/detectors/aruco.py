"""ArUco markers, found with OpenCV's `cv2.aruco.ArucoDetector` (the object API; OpenCV 5
no longer has the free `detectMarkers`)."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from ....runtime.optional import MissingDependency
from ..geometry import marker_centre
from . import Detection


class MarkerFinder:
    """Finds markers of one dictionary; gives every marker's centre pixel and corners."""

    def __init__(self, dictionary: str = "DICT_4X4_50") -> None:
        self.dictionary_name = dictionary
        if not hasattr(getattr(cv2, "aruco", None), "ArucoDetector"):  # OpenCV 4.6 and older
            raise MissingDependency(
                f"the ArUco detector needs OpenCV 4.7 or newer, and this is OpenCV {cv2.__version__}: "
                "pip install 'opencv-python-headless>=4.7' (or use the gemini detector)")
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self._detector = cv2.aruco.ArucoDetector(
            cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)), params)

    def find(self, image: np.ndarray) -> dict[int, np.ndarray]:
        """Marker id -> its four corners (4, 2) in pixels, clockwise from the marker's top-left.
        A marker seen twice keeps its larger sighting."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        corners, ids, _ = self._detector.detectMarkers(gray)
        found: dict[int, np.ndarray] = {}
        if ids is None:
            return found
        for quad, marker_id in zip(corners, ids.ravel(), strict=True):
            quad = quad.reshape(4, 2).astype(np.float64)
            previous = found.get(int(marker_id))
            if previous is None or cv2.contourArea(quad.astype(np.float32)) > cv2.contourArea(
                    previous.astype(np.float32)):
                found[int(marker_id)] = quad
        return found


class ArucoDetector:
    """The `aruco` detector: configured markers become labelled detections."""

    kind = "aruco"

    def __init__(self, labels: Mapping[int, str]) -> None:
        self.labels = dict(labels)
        self.calls = 0

    def detect(self, markers: Mapping[int, np.ndarray]) -> list[Detection]:
        """The labelled markers among those found in a frame (`MarkerFinder.find`)."""
        self.calls += 1
        out = []
        for marker_id, corners in sorted(markers.items()):
            label = self.labels.get(marker_id)
            if label is None:
                continue
            centre = marker_centre(corners)
            out.append(Detection(label=label, pixel=(float(centre[0]), float(centre[1])), confidence=1.0,
                                 marker_id=marker_id))
        return out
