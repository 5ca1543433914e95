"""A print's frames on disk, and the cleanup of old ones.

    folder = FrameFolder.create(output_dir / ".frames", print_id)
    folder.add(jpeg_bytes, {"seq": 12, "t_capture_ns": …})   # frame_000001.jpg + a manifest line
    folder.frames()                                          # the JPEG paths, in order

Each frame is written under a temporary name and renamed, so a crash or a full disk never
leaves a half-written JPEG among the frames; its facts (capture time, trigger, layer) go to
`frames.jsonl` beside it. The folder stays until its video is rendered (or, after a failed
render, until it is older than `frames_max_age_days`), so no captured frame is lost to a
render that went wrong.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

FRAMES_DIR = ".frames"
MANIFEST = "frames.jsonl"
PARTIAL = ".partial"

log = logging.getLogger(__name__)


class FrameFolder:
    """The frames of one print, in `root/print_id/`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = len(self.frames())

    @classmethod
    def create(cls, root: Path, print_id: str) -> FrameFolder:
        path = root / print_id
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def add(self, jpeg: bytes, facts: dict[str, Any]) -> Path:
        """Store one frame; raises OSError (a full disk: ENOSPC) with nothing half-written left."""
        index = self.count + 1
        final = self.path / f"frame_{index:06d}.jpg"
        temporary = self.path / f".frame_{index:06d}.jpg{PARTIAL}"
        try:
            with temporary.open("wb") as fh:
                fh.write(jpeg)
            with (self.path / MANIFEST).open("a") as fh:
                fh.write(json.dumps({"frame": final.name, **facts}) + "\n")
            os.replace(temporary, final)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        self.count = index
        return final

    def frames(self) -> list[Path]:
        return sorted(self.path.glob("frame_*.jpg"))

    def manifest(self) -> list[dict[str, Any]]:
        """The facts of every frame stored (lines of frames whose JPEG is missing left out)."""
        try:
            lines = (self.path / MANIFEST).read_text().splitlines()
        except FileNotFoundError:
            return []
        present = {p.name for p in self.frames()}
        facts = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a full disk
            if isinstance(entry, dict) and entry.get("frame") in present:
                facts.append(entry)
        return facts

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def keep_manifest_only(self) -> Path:
        """After a good render: the JPEGs go, their facts stay as `print_id.jsonl` beside the
        folders (a few hundred bytes a frame, removed with the old folders), so when each frame
        was captured, and for which trigger, can still be read."""
        kept = self.path.with_name(f"{self.path.name}.jsonl")
        try:
            os.replace(self.path / MANIFEST, kept)
        except OSError as exc:
            log.debug("no manifest kept for %s: %s", self.path.name, exc)
        self.remove()
        return kept


def unfinished(root: Path, stem: str, since: float) -> str | None:
    """The newest frame folder of a print of `stem`, written to after `since` (wall seconds),
    that was never rendered (a render leaves `NAME.jsonl` beside it instead), or None."""
    try:
        candidates = [p for p in root.glob(f"{stem}_*") if p.is_dir()
                      and p.name[len(stem) + 1:].replace("_", "").isdigit()
                      and not p.with_name(f"{p.name}.jsonl").exists()
                      and p.stat().st_mtime >= since]
    except OSError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).name if candidates else None


def clean_old(root: Path, max_age_days: float, keep: Collection[str] = (),
              now: float | None = None) -> list[str]:
    """Remove the frame folders (and kept manifests) under `root` not touched for
    `max_age_days`, except those named in `keep`. Returns the names removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name in keep or entry.name.removesuffix(".jsonl") in keep:
            continue
        try:
            age_days = (now - entry.stat().st_mtime) / 86400
        except OSError:
            continue
        if age_days > max_age_days:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d old frame folder(s) from %s: %s", len(removed), root, ", ".join(removed))
    return removed


__all__ = ["FRAMES_DIR", "MANIFEST", "FrameFolder", "clean_old", "unfinished"]
