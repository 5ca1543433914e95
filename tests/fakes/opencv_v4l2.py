"""A stand-in for `cv2.VideoCapture(index, cv2.CAP_V4L2)` on a UVC camera that offers H264.

It follows OpenCV's V4L2 backend (opencv modules/videoio/src/cap_v4l.cpp) where the V4L2
source depends on it:

- `set(CAP_PROP_FOURCC, x)` succeeds only for a format the camera offers (VIDIOC_S_FMT must
  give back the pixelformat asked for, try_palette_v4l2); otherwise the old one stays.
- `set(CAP_PROP_CONVERT_RGB, 0)` always succeeds (it only clears convert_rgb); a build
  without that switch (`raw_switch=False`) refuses it and CAP_PROP_FORMAT = -1 alike.
- `read()` with conversion off hands over the buffer as one row of `bytesused` bytes
  (v4l2_create_frame's default case); with conversion on, an H264 buffer is memcpy'd into a
  height × width × 3 picture (convertToRgb's default case): bytes, not a picture.

The camera's buffers are given as a list (`buffers`), one per read, at most `fps` a second
(a read blocks until the camera's next frame, as on a real device); each open starts the
list again (the camera's encoder restarts with the stream); after the last, read() fails
as an unplugged camera does.
"""

from __future__ import annotations

import time

import cv2
import numpy as np


class FakeV4l2Capture:
    def __init__(self, buffers: list[bytes], *, offers: tuple[str, ...] = ("H264", "YUYV"),
                 size: tuple[int, int] = (320, 240), raw_switch: bool = True,
                 fps: float = 30.0) -> None:
        self.stream = list(buffers)
        self.buffers = list(buffers)
        self.offers = offers
        self.size = size
        self.raw_switch = raw_switch
        self.fourcc = "YUYV"
        self.convert_rgb = True
        self.opened = True
        self.period_s = 1 / fps
        self._next_frame = time.monotonic()

    def __call__(self, target: object, api: int) -> FakeV4l2Capture:
        """Use the instance as the class: `cv2.VideoCapture = FakeV4l2Capture([...])`."""
        assert api == cv2.CAP_V4L2
        self.buffers, self.fourcc, self.convert_rgb, self.opened = list(self.stream), "YUYV", True, True
        return self

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_FOURCC:
            name = "".join(chr((int(value) >> (8 * i)) & 0xFF) for i in range(4))
            if name not in self.offers:
                return False
            self.fourcc = name
            return True
        if prop in (cv2.CAP_PROP_CONVERT_RGB, cv2.CAP_PROP_FORMAT):
            if not self.raw_switch:
                return False
            self.convert_rgb = bool(value > 0)
            return True
        return prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS,
                        cv2.CAP_PROP_BUFFERSIZE)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter_fourcc(*self.fourcc))
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.size[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.size[1])
        if prop == cv2.CAP_PROP_FPS:
            return 30.0
        return -1.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.buffers:
            return False, None
        time.sleep(max(0.0, self._next_frame - time.monotonic()))  # the camera's frame period
        self._next_frame = max(self._next_frame + self.period_s, time.monotonic())
        data = np.frombuffer(self.buffers.pop(0), np.uint8)
        if not self.convert_rgb:
            return True, data.reshape(1, -1)
        w, h = self.size
        picture = np.zeros(h * w * 3, np.uint8)
        picture[: min(len(data), len(picture))] = data[: len(picture)]
        return True, picture.reshape(h, w, 3)

    def release(self) -> None:
        self.opened = False
