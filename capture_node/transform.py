"""Rotation and flip of a camera's picture, for cameras mounted sideways or seen in a mirror.

The picture is first turned clockwise by `rotation` degrees, then flipped: "horizontal"
mirrors left and right, "vertical" top and bottom, "both" is the two together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
_FLIP = {"horizontal": 1, "vertical": 0, "both": -1}


@dataclass(frozen=True, slots=True)
class Transform:
    """A rotation (clockwise degrees: 0, 90, 180, 270) followed by a flip."""

    rotation: int = 0
    flip: str = "none"

    def __post_init__(self) -> None:
        if self.rotation not in (0, *_ROTATE):
            raise ValueError(f"rotation must be 0, 90, 180 or 270, got {self.rotation!r}")
        if self.flip not in ("none", *_FLIP):
            raise ValueError(f"flip must be none, horizontal, vertical or both, got {self.flip!r}")

    @property
    def identity(self) -> bool:
        """True when the picture is published as the camera delivers it."""
        return self.rotation == 0 and self.flip == "none"

    def size(self, w: int, h: int) -> tuple[int, int]:
        """(w, h) of a w x h picture after this transform."""
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The transformed picture (a new contiguous array; `image` itself when identity)."""
        if self.identity:
            return image
        out = image
        if self.rotation:
            out = cv2.rotate(out, _ROTATE[self.rotation])
        if self.flip != "none":
            out = cv2.flip(out, _FLIP[self.flip])
        return np.ascontiguousarray(out)
