"""Text drawn onto generated frames (camera name, frame counter, capture time)."""

from __future__ import annotations

import time

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_caption(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a darkened box at `origin` (the baseline's left end).

    A box keeps small text legible on any background, where an outline swamps thin strokes.
    """
    thickness = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = origin
    pad = max(2, thickness * 2)
    image[max(0, y - th - pad): y + base + pad // 2, max(0, x - pad): x + tw + pad] //= 4
    cv2.putText(image, text, origin, FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def frame_stamp(frames: int, t_capture_ns: int) -> str:
    """'#123  14:05:09.417': the frame counter and the local capture time."""
    stamp = time.strftime("%H:%M:%S", time.localtime(t_capture_ns / 1e9))
    return f"#{frames}  {stamp}.{(t_capture_ns // 1_000_000) % 1000:03d}"
