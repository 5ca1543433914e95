"""Detectors: what a camera's frame shows, as labelled pixel positions.

    aruco    ArUco markers found locally (cv2.aruco.ArucoDetector); marker id -> label
    gemini   a Gemini model asked for labelled boxes, within the shared request budget

A detector returns `Detection`s in the frame's own pixels; geometry turns them into mm.
A detector that may not run now (the camera's gate is shut: too soon, the budget is spent, the
service is backing off) raises `DetectionSkipped`, which the tracker counts and shows in its
status; it is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from ....runtime.errors import CamfabricError


@dataclass(frozen=True, slots=True)
class Detection:
    """One object seen in one frame, in that frame's pixels.

    `pixel` is the object's centre (a marker's centre); `box` (x0, y0, x1, y1) when the
    detector gives one; `marker_id` for markers.
    """

    label: str
    pixel: tuple[float, float]
    confidence: float = 1.0
    marker_id: int | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def top(self) -> tuple[float, float]:
        """The middle of the box's top edge (the object's top, for height); else the centre."""
        if self.box is None:
            return self.pixel
        return ((self.box[0] + self.box[2]) / 2, self.box[1])


class DetectionSkipped(CamfabricError):
    """A detector that may not run now; `retry_at` (monotonic s) says when it may again."""

    def __init__(self, reason: str, retry_at: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_at = retry_at


__all__ = ["Detection", "DetectionSkipped"]
