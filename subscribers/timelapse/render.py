"""A print's frames into an MP4 and a preview JPEG, written atomically.

    video = render(folder.frames(), output_dir / "timelapse_cube_20261207_0145.mp4",
                   fps=30, duplicate_last_s=2, codec="auto")
    video.path, video.preview, video.frames, video.fps, video.encoder

H.264 through PyAV when it is installed (the optional `timelapse` extra), otherwise MPEG-4 Part 2
(`mp4v`) through OpenCV, which every camfabric install has; `vp9` (OpenCV too) for a video a
browser plays without PyAV, at many times the encoding time. Both are written to a hidden
temporary name in the output folder and renamed when complete: a half-written video never
appears under its final name, and a failure leaves only the frames behind.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ...runtime.errors import CamfabricError

log = logging.getLogger(__name__)


# OpenCV's FFmpeg writers: MPEG-4 Part 2 (fast, plays in desktop players, not in browsers) and
# VP9 (plays in browsers, Mainsail's player included, but encodes many times slower).
FOURCC = {"mp4v": "mp4v", "vp9": "vp09"}


class RenderError(CamfabricError):
    """The video could not be written (no frames, an encoder missing, a full disk)."""


@dataclass(frozen=True, slots=True)
class Video:
    path: Path
    preview: Path
    frames: int  # frames in the file, the duplicated last ones included
    fps: float
    encoder: str


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def render(frames: list[Path], path: Path, *, fps: float, duplicate_last_s: float = 0.0,
           codec: str = "auto", preview_quality: int = 90) -> Video:
    """Encode `frames` (JPEG files, in order) into the MP4 `path` and its preview `path.jpg`."""
    images = _Images(frames)
    if not images.count:
        raise RenderError("no frames were captured for this print: nothing to render")
    extra = round(duplicate_last_s * fps)
    encoder = codec if codec != "auto" else ("h264" if have_pyav() else "mp4v")
    if encoder == "h264" and not have_pyav():
        raise RenderError("timelapse.codec = \"h264\" needs PyAV: pip install 'camfabric[timelapse]'")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if encoder == "h264":
            written = _write_pyav(images, temporary, fps, extra)
        else:
            written = _write_opencv(images, temporary, fps, extra, FOURCC[encoder])
        os.replace(temporary, path)
        preview = _write_preview(images.last, path.with_suffix(".jpg"), preview_quality)
    except OSError as exc:
        raise RenderError(f"writing {path.name} failed: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    log.info("timelapse: rendered %s: %d frames at %g fps (%s)", path, written, fps, encoder)
    return Video(path, preview, written, fps, encoder)


class _Images:
    """The frames as BGR images of one size (the first readable frame's, made even for H.264)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [p for p in paths if cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None]
        if len(self.paths) < len(paths):
            log.warning("timelapse: %d unreadable frame(s) left out", len(paths) - len(self.paths))
        self.count = len(self.paths)
        first = cv2.imread(str(self.paths[0])) if self.paths else None
        h, w = first.shape[:2] if first is not None else (2, 2)
        self.size = (w - w % 2, h - h % 2)
        self.last: np.ndarray | None = None

    def __iter__(self):
        for p in self.paths:
            image = cv2.imread(str(p))
            if image is None:
                continue
            if (image.shape[1], image.shape[0]) != self.size:
                image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
            self.last = image
            yield image


def _write_opencv(images: _Images, path: Path, fps: float, extra: int, fourcc: str) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, images.size)
    if not writer.isOpened():
        raise RenderError(f"OpenCV cannot write MP4 ({fourcc}) to {path.parent}: its FFmpeg may lack "
                          "the encoder, or the folder is not writable or full")
    written = 0
    try:
        for image in images:
            writer.write(image)
            written += 1
        for _ in range(extra):
            writer.write(images.last)
            written += 1
    finally:
        writer.release()
    if not path.exists() or path.stat().st_size == 0:
        raise RenderError(f"OpenCV wrote no video to {path.parent} (a full disk?)")
    return written


def _write_pyav(images: _Images, path: Path, fps: float, extra: int) -> int:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = images.size
            stream.pix_fmt = "yuv420p"
            written = 0

            def encode(image: np.ndarray) -> None:
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)

            for image in images:
                encode(image)
                written += 1
            for _ in range(extra):
                encode(images.last)
                written += 1
            for packet in stream.encode():
                container.mux(packet)
    except av.FFmpegError as exc:
        raise RenderError(f"H.264 encoding failed: {exc}") from exc
    return written


def _write_preview(image: np.ndarray | None, path: Path, quality: int) -> Path:
    if image is None:
        raise RenderError("no readable frame for the preview")
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RenderError("the preview could not be encoded")
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_bytes(data.tobytes())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


__all__ = ["RenderError", "Video", "have_pyav", "render"]
