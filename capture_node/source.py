"""The source interface: how the capture node gets images from one camera.

A source is opened, read one image at a time by the camera's capture thread, and closed. It
never publishes and never encodes for the fabric; the capture loop decides what subscribers
need. A source delivers either the JPEG bytes its camera produced (MJPEG cameras,
`rpicam-vid --codec mjpeg`, MJPEG URLs — passed through without re-encoding) or a decoded
image (raw cameras, files, synthetic scenes).

Each kind lives in its own module under `capture_node/sources/` and exposes

    Options                 a frozen dataclass: the `[node.cameras.source]` table's schema
    create(options, camera) -> Source

and is registered by name in `capture_node/sources/__init__.py`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import SourceError


@dataclass(frozen=True, slots=True, eq=False)
class Capture:
    """One image as a source delivered it: `jpeg` bytes, or a decoded `image`, or both; or one
    H.264 access unit (`h264`, Annex B, `key` when it is a keyframe) from a camera that
    encodes H.264 itself, which the node passes through and decodes only for JPEG and raw.

    `t_capture_ns` is the wall-clock time of capture (time.time_ns() when the source has no
    better timestamp). `w` and `h` are the image's size.
    """

    t_capture_ns: int
    w: int
    h: int
    jpeg: bytes | None = None
    image: np.ndarray | None = None  # BGR uint8 (h, w, 3) or grayscale (h, w)
    h264: bytes | None = None
    key: bool = False

    def __post_init__(self) -> None:
        if self.jpeg is None and self.image is None and self.h264 is None:
            raise ValueError("a Capture needs jpeg bytes, an image or an H.264 access unit")


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What the startup scan learned of one camera."""

    opened: bool
    device: str
    formats: list[str] = field(default_factory=list)
    resolutions: list[tuple[int, int]] = field(default_factory=list)
    first_frame_ms: float | None = None
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """One camera, as its capture thread sees it."""

    kind: ClassVar[str] = ""
    probe_formats: ClassVar[tuple[str, ...]] = ()  # what the startup scan reports it delivers

    @abc.abstractmethod
    def open(self) -> None:
        """Open the camera; raise SourceError with the cause when it cannot be opened."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Capture:
        """Block until the next image (at most `timeout` s); raise SourceError when the camera
        failed (unplugged, stream ended, timed out). The capture loop then closes, backs off
        and opens again."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the camera; safe to call twice and after a failed open."""

    def interrupt(self) -> None:  # noqa: B027  (optional hook, empty by default)
        """Make a blocked `read` return soon (called from another thread on shutdown)."""

    @property
    def device(self) -> str:
        """What the registry shows as the camera's device (a path, URL or description)."""
        return self.kind

    def probe(self) -> ProbeReport:
        """Open, read one image, close: the startup scan's report for this camera."""
        import time

        start = time.monotonic()
        formats = list(self.probe_formats)
        try:
            self.open()
            first = self.read(timeout=5.0)
            return ProbeReport(opened=True, device=self.device, formats=formats,
                               resolutions=[(first.w, first.h)],
                               first_frame_ms=(time.monotonic() - start) * 1000)
        except SourceError as exc:
            return ProbeReport(opened=False, device=self.device, formats=formats, error=str(exc))
        finally:
            self.close()
