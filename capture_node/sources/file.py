"""Replay: a video file, or a folder of images in name order, looping, paced like a camera.

    [node.cameras.source]
    kind = "file"
    path = "/var/lib/camfabric/replay/overhead.mp4"   # or a folder of .jpg/.png files
    pace = "camera"                                    # the camera's fps; "file": the video's own
    loop = true

A JPEG image (without an Exif block, which may carry a thumbnail) is passed through as read;
other images and video frames are delivered decoded, and the capture loop encodes them only
when someone subscribes to JPEG. Frames are released on a fixed schedule (no drift, no burst
to catch up after a stall). With `loop = false` the end of the file is a SourceError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ...runtime.errors import ConfigError
from ..errors import SourceError
from ..pacing import FramePacer
from ..source import Capture, ProbeReport, Source
from .jpeg_stream import check_jpeg, frame_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass(frozen=True, slots=True)
class Options:
    """The `[node.cameras.source]` table of a replayed camera (besides `kind`)."""

    path: Path
    pace: Literal["camera", "file"] = "camera"
    loop: bool = True

    def __post_init__(self) -> None:
        if not Path(self.path).exists():
            raise ConfigError("path", f"{self.path} does not exist")


def image_files(folder: Path) -> list[Path]:
    """The folder's image files, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FileSource(Source):
    """Frames of a video file or an image folder, at a steady rate, over and over."""

    kind = "file"

    def __init__(self, options: Options, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.path = Path(options.path)
        self.camera_fps = fps
        self.clock = clock
        self.fps = fps
        self.loops = 0
        self._video: cv2.VideoCapture | None = None
        self._images: list[Path] = []
        self._index = 0
        self.pacer = FramePacer(fps, clock)

    @property
    def device(self) -> str:
        return str(self.path)

    def open(self) -> None:
        self.close()
        if self.path.is_dir():
            self._images = image_files(self.path)
            if not self._images:
                raise SourceError(f"{self.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self.fps = self.camera_fps
        else:
            self._video = self._open_video()
            file_fps = self._video.get(cv2.CAP_PROP_FPS)
            use_file = self.options.pace == "file" and 0 < file_fps <= 1000
            self.fps = file_fps if use_file else self.camera_fps
        self._index = 0
        self.pacer.restart(self.fps)

    def read(self, timeout: float) -> Capture:
        try:
            self.pacer.wait(timeout)
        except SourceError as exc:
            raise SourceError(f"{self.path}: {exc}") from None
        return self._next_image() if self._images else self._next_video_frame()

    def close(self) -> None:
        video, self._video = self._video, None
        if video is not None:
            video.release()
        self._images = []

    def interrupt(self) -> None:
        self.pacer.interrupt()

    def probe(self) -> ProbeReport:
        start = time.monotonic()
        formats = ["images"] if self.path.is_dir() else ["video"]
        try:
            self.open()
            first = self.read(timeout=5.0)
            return ProbeReport(opened=True, device=self.device, formats=formats,
                               resolutions=[(first.w, first.h)],
                               first_frame_ms=(time.monotonic() - start) * 1000,
                               details={"pace": self.options.pace, "fps": self.fps,
                                        "passthrough": first.jpeg is not None})
        except SourceError as exc:
            return ProbeReport(opened=False, device=self.device, formats=formats, error=str(exc))
        finally:
            self.close()

    # -- internals -------------------------------------------------------------------------------
    def _open_video(self) -> cv2.VideoCapture:
        video = cv2.VideoCapture(str(self.path))
        if not video.isOpened():
            video.release()
            raise SourceError(f"{self.path}: OpenCV cannot open it as a video")
        return video

    def _next_video_frame(self) -> Capture:
        assert self._video is not None
        ok, image = self._video.read()
        if not ok:
            if not self.options.loop:
                raise SourceError(f"{self.path}: end of file")
            self._video.release()
            self._video = self._open_video()
            self.loops += 1
            ok, image = self._video.read()
            if not ok:
                raise SourceError(f"{self.path}: no frame could be read")
        h, w = image.shape[:2]
        return Capture(t_capture_ns=time.time_ns(), w=w, h=h, image=image)

    def _next_image(self) -> Capture:
        if self._index >= len(self._images):
            if not self.options.loop:
                raise SourceError(f"{self.path}: end of the image folder")
            self._index = 0
            self.loops += 1
        path = self._images[self._index]
        self._index += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{path}: {exc.strerror or exc}") from exc
        if path.suffix.lower() in (".jpg", ".jpeg") and b"Exif\x00\x00" not in data[:64] and check_jpeg(data):
            w, h = frame_size(data)
            return Capture(t_capture_ns=time.time_ns(), w=w, h=h, jpeg=data)
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{path}: not a readable image")
        h, w = image.shape[:2]
        return Capture(t_capture_ns=time.time_ns(), w=w, h=h, image=image)


def create(options: Options, camera: object) -> FileSource:
    """A replay source paced at the camera's fps (or the file's own with pace = "file")."""
    return FileSource(options, float(camera.fps))  # type: ignore[attr-defined]
