"""A synthetic camera: a moving scene drawn on the fly, for demos and tests without hardware.

The background (gradient, grid) is rendered once at open; each frame is a copy of it with a
bouncing ball, the camera's name, the frame counter and the capture time drawn on top, so three
1920x1080 cameras at 30 fps cost a fraction of a core. Frames are paced by the clock: `read`
waits on an Event until the next frame is due, and `interrupt` wakes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ...runtime.config import bounded
from ..errors import SourceError
from ..pacing import FramePacer
from ..source import Capture, Source
from .caption import draw_caption, frame_stamp


@dataclass(frozen=True, slots=True)
class Options:
    """`[node.cameras.source]` keys of a synthetic camera (besides kind = "synthetic")."""

    speed: float = bounded(1.0, 0.0, 20.0)  # how fast the ball crosses the picture
    label: str = ""  # text drawn on the picture; default: the camera's name


def create(options: Options, camera: Any) -> SyntheticSource:
    """A synthetic source drawing at the camera's resolution and fps."""
    w, h = camera.resolution
    return SyntheticSource(w, h, camera.fps, label=options.label or camera.name,
                           speed=options.speed, seed=camera.id)


class SyntheticSource(Source):
    """Draws frames of a moving scene at `fps`, each stamped with its counter and time."""

    kind = "synthetic"
    probe_formats = ("BGR3",)

    def __init__(self, width: int, height: int, fps: float, *, label: str = "synthetic",
                 speed: float = 1.0, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.width = int(width)
        self.height = int(height)
        self.label = label
        self.speed = speed
        self.seed = seed
        self.clock = clock
        self.pacer = FramePacer(fps, clock)
        self.frames = 0
        self._background: np.ndarray | None = None
        self._started = 0.0
        self._scale = max(0.4, self.height / 720)
        self._radius = max(4, min(self.width, self.height) // 12)

    @property
    def device(self) -> str:
        return f"synthetic:{self.width}x{self.height}@{self.pacer.fps:g}"

    def open(self) -> None:
        if self._background is None:
            self._background = self._render_background()
        self._started = self.clock()
        self.pacer.restart()

    def read(self, timeout: float) -> Capture:
        if self._background is None:
            raise SourceError("synthetic source read before open")
        self.pacer.wait(timeout)
        t_capture_ns = time.time_ns()
        image = self._draw(self.clock() - self._started, t_capture_ns)
        self.frames += 1
        return Capture(t_capture_ns=t_capture_ns, w=self.width, h=self.height, image=image)

    def close(self) -> None:
        pass  # nothing held open; the rendered background is kept for the next open

    def interrupt(self) -> None:
        self.pacer.interrupt()

    # -- drawing -----------------------------------------------------------------------------
    def _render_background(self) -> np.ndarray:
        w, h = self.width, self.height
        hue = (self.seed * 47) % 180
        xs = np.linspace(0, 255, w, dtype=np.float32)
        ys = np.linspace(0, 255, h, dtype=np.float32)
        hsv = np.empty((h, w, 3), dtype=np.uint8)
        hsv[..., 0] = hue
        hsv[..., 1] = (80 + 0.3 * xs[None, :]).astype(np.uint8)
        hsv[..., 2] = (90 + 0.4 * ys[:, None]).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        step = max(8, min(w, h) // 8)
        image[::step, :] = (200, 200, 200)
        image[:, ::step] = (200, 200, 200)
        return image

    def _draw(self, elapsed: float, t_capture_ns: int) -> np.ndarray:
        image = self._background.copy()
        r = self._radius
        # A ball bouncing off the edges: a triangle wave on each axis, the axes out of step.
        phase = elapsed * self.speed * 0.25
        x = r + _bounce(phase * 1.0 + 0.13 * self.seed) * max(1, self.width - 2 * r)
        y = r + _bounce(phase * 0.77 + 0.29 * self.seed) * max(1, self.height - 2 * r)
        cv2.circle(image, (int(x), int(y)), r, (0, 64, 255), -1, cv2.LINE_AA)
        cv2.circle(image, (int(x), int(y)), r, (255, 255, 255), max(1, r // 8), cv2.LINE_AA)
        draw_caption(image, self.label, (int(10 * self._scale), int(40 * self._scale)), 1.2 * self._scale)
        draw_caption(image, frame_stamp(self.frames, t_capture_ns),
                     (int(10 * self._scale), self.height - int(16 * self._scale)), 0.9 * self._scale)
        return image


def _bounce(t: float) -> float:
    """0 → 1 → 0 as t goes 0 → 1 → 2: the position of something bouncing between two walls."""
    frac = t - math.floor(t / 2) * 2
    return frac if frac <= 1 else 2 - frac
