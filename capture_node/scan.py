"""The node's startup scan: what each configured camera and this host's video devices look like.

Each camera is probed through its own source (`Source.probe()`: opened or not, formats,
resolutions, first-frame latency, error) by its capture thread just before capturing starts,
so nothing else ever opens the device. The report is published once on `scan/{node}/` and
stays in the publisher's last-value cache for anyone who subscribes later.
"""

from __future__ import annotations

import glob
import time
from typing import Any

from .config import CameraConfig
from .source import ProbeReport


def video_devices(pattern: str = "/dev/video*") -> list[str]:
    """The V4L2 device nodes visible on this host, sorted by number."""
    def number(path: str) -> tuple[int, str]:
        digits = path.rsplit("video", 1)[-1]
        return (int(digits) if digits.isdigit() else 1 << 30, path)

    return sorted(glob.glob(pattern), key=number)


def camera_entry(camera: CameraConfig, report: ProbeReport | None) -> dict[str, Any]:
    """One camera's part of the scan report, in plain types for the wire."""
    if report is None:
        return {"name": camera.name, "source": camera.kind, "device": camera.device,
                "opened": False, "error": "not probed before the scan was published",
                "formats": [], "resolutions": [], "first_frame_ms": None}
    return {
        "name": camera.name,
        "source": camera.kind,
        "device": camera.device or report.device,
        "opened": report.opened,
        "formats": list(report.formats),
        "resolutions": [[int(w), int(h)] for w, h in report.resolutions],
        "first_frame_ms": None if report.first_frame_ms is None else round(report.first_frame_ms, 1),
        "error": report.error,
        **({"details": dict(report.details)} if report.details else {}),
    }


def scan_report(node: str, cameras: dict[int, tuple[CameraConfig, ProbeReport | None]],
                devices: list[str] | None = None) -> dict[str, Any]:
    """The scan report: every configured camera's probe and the host's /dev/video* devices."""
    return {
        "node": node,
        "time": time.time(),
        "cameras": {str(cam): camera_entry(config, report)
                    for cam, (config, report) in sorted(cameras.items())},
        "devices": video_devices() if devices is None else devices,
    }
