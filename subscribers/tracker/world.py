"""The world model: tracked objects in workspace millimetres, built from detections.

An overhead detection of a label within `match_distance_mm` of where a known object of that
label is estimated to be at the frame's capture time updates it; otherwise it starts a new
object. Each object's motion is a constant-velocity Kalman filter (`motion.Motion`) on the point
where its marker's ray meets the table; the position is that point corrected for the object's
height. The model is published *estimated for a moment* (`snapshot(now, …)`): each object's
`position_mm` carried along its velocity from its last detection to `now` (for at most
`stale_s`), with its `uncertainty_mm` (a 95 % radius, growing with the time since the
detection) and the detection itself (`measured_mm`, captured at `measured_at`). A side
detection sets only the height (z) and the side camera's own fields of the object of its label
whose (x, y) best explains the pixel, and never refreshes the (x, y)'s time. That (x, y) is
the object's overhead sighting in the frame captured together with the side frame (`paired`:
the tracker takes the two cameras' frames as one synchronised set), so a moving box's height is
measured against frames taken at the same moment; when there is no such sighting (no set formed
in time, or the overhead frame missed the object) it is where the object was at the side
frame's capture time, interpolated between its overhead sightings — and counted
(`heights["interpolated"]`). Each object publishes which it was (`height_at`). Objects whose (x, y)
was not seen for `stale_s`, or whose uncertainty passed `max_uncertainty_mm`, are marked stale,
and after `remove_s` removed. Detections of the
arm-mounted camera stay in that camera's frame: they are listed under `camera_frames`, never
mixed into workspace millimetres.

Each sighting carries two times, both passed in: `seen`, when its frame was captured on this
host's monotonic clock (ages, the filter, staleness and expiry use it, so a stepped wall clock
changes nothing), and `stamp`, the frame's capture time on the wall clock (what is published as
`last_seen` and `measured_at`). The model keeps no clock of its own.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...protocol.world import RADIUS_95, object_at
from .config import WorldConfig
from .motion import Motion

TRACK_LEN = 8
HEIGHT_ROUNDS = 3  # x, y <-> height: each round shrinks the parallax error ~c_z / z-fold
Correction = Callable[[tuple[float, float], float], tuple[float, float]]


@dataclass
class TrackedObject:
    """One object of the world model (see `as_dict` for the published form).

    Overhead sightings are filtered where their rays meet the table (`motion`; `plane_x`,
    `plane_y` its estimate at the last detection, `measured` that detection itself); the
    position is that point corrected for the object's height, so a height measured later
    corrects every earlier sighting at once.
    """

    id: str
    label: str
    motion: Motion
    measured: tuple[float, float]
    z: float
    confidence: float
    camera: str
    first_seen: float
    last_seen: float  # wall-clock capture time of the frame the (x, y) came from
    seen: float  # the same moment on the monotonic clock
    observations: int = 1
    height_seen: float | None = None  # wall-clock capture time of the last height
    z_seen: float = 0.0  # the same moment on the monotonic clock
    # The (x, y) the last height was measured at, the wall-clock capture time it stands for and
    # whether it came from an overhead frame captured together with the side frame.
    height_at: dict[str, Any] | None = None
    correct: Correction | None = None
    pixel: dict[str, list[float]] = field(default_factory=dict)
    # The last overhead sightings as seen (monotonic time, table point), unsmoothed: where the
    # object was when a side camera's frame was captured.
    track: collections.deque[tuple[float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=TRACK_LEN))

    @property
    def plane_x(self) -> float:
        return self.motion.x

    @property
    def plane_y(self) -> float:
        return self.motion.y

    @property
    def xy(self) -> tuple[float, float]:
        """The estimate at the last detection, in workspace mm."""
        return self.at_height((self.plane_x, self.plane_y), self.z)

    def scale(self) -> float:
        """How table-plane lengths shrink at the object's height (parallax); 1 without it."""
        if not self.correct:
            return 1.0
        x0, _ = self.correct((0.0, 0.0), self.z)
        x1, _ = self.correct((1000.0, 0.0), self.z)
        return abs(x1 - x0) / 1000.0

    def plane_sighted_at(self, seen: float) -> tuple[float, float] | None:
        """Where its ray met the table in the overhead frame captured at `seen`, if it was seen."""
        for t, x, y in reversed(self.track):
            if t == seen:
                return x, y
            if t < seen:
                break
        return None

    def plane_at(self, seen: float) -> tuple[float, float]:
        """Where its ray met the table at `seen` (monotonic): its overhead sightings
        interpolated, carried on along the last two for at most the gap between them, else the
        nearest."""
        return _interpolate(self.track, seen) or (self.plane_x, self.plane_y)

    def at_height(self, plane: tuple[float, float], z: float) -> tuple[float, float]:
        """The (x, y) of a table point `plane` for an object `z` mm tall (parallax)."""
        return self.correct(plane, z) if self.correct else plane

    def as_dict(self, now: float, config: WorldConfig, stale_s: float) -> dict[str, Any]:
        """The object as published, estimated for `now` (monotonic)."""
        x, y = self.xy
        mx, my = self.at_height(self.measured, self.z)
        k = self.scale()
        m = self.motion
        spread = m.spread(config)
        for key, power in (("position_var_mm2", 2), ("covariance_mm2_s", 2), ("velocity_var_mm2_s2", 2),
                           ("acceleration_mm_s2", 1)):
            spread[key] = round(spread[key] * k ** power, 6)
        at_detection = {
            "id": self.id, "label": self.label,
            "position_mm": {"x": x, "y": y, "z": round(self.z, 2)},
            "velocity_mm_s": {"x": round(m.vx * k, 3), "y": round(m.vy * k, 3)},
            "velocity_uncertainty_mm_s": round(RADIUS_95 * math.sqrt(max(0.0, m.vv)) * k, 3),
            "measured_mm": {"x": round(mx, 2), "y": round(my, 2), "z": round(self.z, 2)},
            "measured_at": self.last_seen, "measured_age_s": 0.0, "filter": spread,
            "confidence": round(self.confidence, 3), "camera": self.camera,
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "observations": self.observations, "height_seen": self.height_seen,
            "height_at": dict(self.height_at) if self.height_at else None,
            "pixel": {cam: [round(p[0], 1), round(p[1], 1)] for cam, p in self.pixel.items()},
        }
        return object_at(at_detection, now - self.seen, stale_s, config.max_uncertainty_mm)


def _interpolate(track: Sequence[tuple[float, float, float]], t: float) -> tuple[float, float] | None:
    if not track:
        return None
    if len(track) == 1 or t <= track[0][0]:
        return track[0][1], track[0][2]
    for (t0, x0, y0), (t1, x1, y1) in zip(track, list(track)[1:], strict=False):
        if t0 <= t <= t1 and t1 > t0:
            f = (t - t0) / (t1 - t0)
            return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
    (t0, x0, y0), (t1, x1, y1) = track[-2], track[-1]
    if t1 <= t0:
        return x1, y1
    f = min(t - t1, t1 - t0) / (t1 - t0)  # carried on for at most one gap
    return x1 + f * (x1 - x0), y1 + f * (y1 - y0)


@dataclass(frozen=True, slots=True)
class PlaneSighting:
    """An overhead detection: where its ray meets the table, and how to correct that for a
    given height (parallax), in mm."""

    label: str
    table_xy: tuple[float, float]
    pixel: tuple[float, float]
    confidence: float = 1.0
    correct: Correction | None = None


@dataclass(frozen=True, slots=True)
class HeightSighting:
    """A side detection: `height_at(x, y) -> (z, residual px)` measures the object's top."""

    label: str
    pixel: tuple[float, float]
    height_at: Callable[[float, float], tuple[float, float]]
    confidence: float = 1.0


class WorldModel:
    """Tracked objects, updated by sightings, aged by time; thread-safe."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        # Set by the tracker when the config leaves them unset (derived from the intervals).
        self.stale_s = self.config.stale_s if self.config.stale_s is not None else 6.0
        self.remove_s = (self.config.remove_s if self.config.remove_s is not None
                         else max(30.0, 3 * self.stale_s))
        self._objects: dict[str, TrackedObject] = {}
        self._camera_frames: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._stale: set[str] = set()
        self._lock = threading.Lock()
        self.version = 0
        self.unmatched_heights = 0
        # Heights measured at a sighting of the same moment / at an interpolated (x, y).
        self.heights = {"synced": 0, "interpolated": 0}

    def observe_plane(self, camera: str, sightings: Sequence[PlaneSighting], seen: float,
                      stamp: float, *, track_only: bool = False) -> None:
        """Overhead detections of one frame captured at `seen` (monotonic) / `stamp` (wall).

        `track_only`: an extra look, taken only to measure heights at (the overhead frame of a
        synchronised pair): its sightings join the known objects' tracks and move nothing —
        no filter step a fraction of a second after the last, no new `last_seen`, no new
        object."""
        if track_only:
            self._add_to_tracks(sightings, seen)
            return
        with self._lock:
            claimed: set[str] = set()
            for s in sightings:
                best, best_d = None, self.config.match_distance_mm
                for obj in self._objects.values():
                    if obj.label != s.label or obj.id in claimed:
                        continue
                    px, py = obj.motion.position(seen, self.stale_s)  # where it should be now
                    d = math.hypot(s.table_xy[0] - px, s.table_xy[1] - py)
                    if d <= best_d:
                        best, best_d = obj, d
                if best is None:
                    best = TrackedObject(id=f"{s.label}-{next(self._ids)}", label=s.label,
                                         motion=Motion.start(s.table_xy, seen, self.config),
                                         measured=s.table_xy, z=0.0,
                                         confidence=s.confidence, camera=camera, first_seen=stamp,
                                         last_seen=stamp, seen=seen, correct=s.correct)
                    self._objects[best.id] = best
                elif seen > best.seen:  # an older frame finishing late never moves an object back
                    best.motion.update(s.table_xy, seen, self.config)
                    best.measured = s.table_xy
                    best.correct = s.correct
                    best.confidence = s.confidence
                    best.observations += 1
                    best.last_seen, best.seen = stamp, seen
                    best.camera = camera
                best.pixel[camera] = [float(s.pixel[0]), float(s.pixel[1])]
                if not best.track or seen > best.track[-1][0]:
                    best.track.append((seen, s.table_xy[0], s.table_xy[1]))
                claimed.add(best.id)
            self.version += 1

    def _add_to_tracks(self, sightings: Sequence[PlaneSighting], seen: float) -> None:
        with self._lock:
            claimed: set[str] = set()
            for s in sightings:
                near = [o for o in self._objects.values() if o.label == s.label and o.id not in claimed]
                best = min(near, default=None, key=lambda o: self._distance(o, s, seen))
                if best is None or self._distance(best, s, seen) > self.config.match_distance_mm:
                    continue
                # In time order: the pair's frame may be older than the newest sighting.
                points = sorted([p for p in best.track if p[0] != seen] + [(seen, *s.table_xy)])
                best.track = collections.deque(points[-TRACK_LEN:], maxlen=TRACK_LEN)
                claimed.add(best.id)

    def observe_heights(self, camera: str, sightings: Sequence[HeightSighting], seen: float,
                        stamp: float, *, paired: tuple[float, float] | None = None) -> None:
        """Side detections of one frame: each sets the height of the object of its label whose
        (x, y) puts it closest to the detection's pixel (within `side_match_px`). `paired`:
        the capture time (monotonic, wall) of the overhead frame taken together with this one."""
        with self._lock:
            claimed: set[str] = set()
            for s in sightings:
                best, best_r, best_z, best_at = None, self.config.side_match_px, 0.0, None
                for obj in self._objects.values():
                    if obj.label != s.label or obj.id in claimed:
                        continue
                    at = self._measured_at(obj, seen, stamp, paired)
                    z, residual = self._measure(obj, s, at)
                    if residual <= best_r:
                        best, best_r, best_z, best_at = obj, residual, z, at
                if best is None:
                    self.unmatched_heights += 1
                    continue
                best.z = best_z
                best.height_seen, best.z_seen = stamp, seen
                best.height_at = {k: round(v, 2) if k in ("x", "y") else v for k, v in best_at.items()}
                self.heights["synced" if best_at["synced"] else "interpolated"] += 1
                best.pixel[camera] = [float(s.pixel[0]), float(s.pixel[1])]
                claimed.add(best.id)
            self.version += 1

    @staticmethod
    def _measured_at(obj: TrackedObject, seen: float, stamp: float,
                     paired: tuple[float, float] | None) -> dict[str, Any]:
        """Where a side frame captured at `seen` / `stamp` measures `obj`'s height: its sighting
        in the overhead frame captured together (at `paired`), else interpolated to `seen`
        (the table point its ray met; `_measure` puts it at the object's height)."""
        plane = obj.plane_sighted_at(paired[0]) if paired is not None else None
        if plane is not None:
            assert paired is not None
            return {"x": plane[0], "y": plane[1], "seen": paired[1], "synced": True}
        x, y = obj.plane_at(seen)
        return {"x": x, "y": y, "seen": stamp, "synced": False}

    @staticmethod
    def _measure(obj: TrackedObject, sighting: HeightSighting, at: dict[str, Any]) -> tuple[float, float]:
        """The height (and residual, px) a side sighting gives at `at`, with `at` moved to the
        object's (x, y): the overhead ray meets the object's top, not the table, so x, y depend
        on the height being measured — a few rounds settle both (from the last known height)."""
        plane, z = (at["x"], at["y"]), obj.z
        residual = 0.0
        for _ in range(HEIGHT_ROUNDS):
            at["x"], at["y"] = obj.at_height(plane, z)
            z, residual = sighting.height_at(at["x"], at["y"])
        return z, residual

    def observe_camera_frame(self, camera: str, frame: str, detections: Sequence[dict[str, Any]],
                             seen: float, stamp: float) -> None:
        """Detections that stay in a camera's own frame (the arm-mounted camera)."""
        with self._lock:
            self._camera_frames[camera] = {"frame": frame, "time": stamp, "seen": seen,
                                           "detections": list(detections)}
            self.version += 1

    def _distance(self, obj: TrackedObject, s: PlaneSighting, seen: float) -> float:
        px, py = obj.motion.position(seen, self.stale_s)
        return math.hypot(s.table_xy[0] - px, s.table_xy[1] - py)

    def _is_stale(self, obj: TrackedObject, now: float) -> bool:
        return bool(obj.as_dict(now, self.config, self.stale_s)["stale"])

    def expire(self, now: float) -> bool:
        """Drop objects unseen for `remove_s` at `now` (monotonic); True when the model changed
        (including an object turning stale)."""
        with self._lock:
            gone = [k for k, o in self._objects.items() if now - o.seen > self.remove_s]
            for key in gone:
                del self._objects[key]
            stale_now = {k for k, o in self._objects.items() if self._is_stale(o, now)}
            old_frames = [c for c, f in self._camera_frames.items() if now - f["seen"] > self.remove_s]
            for cam in old_frames:
                del self._camera_frames[cam]
            changed = bool(gone) or bool(old_frames) or stale_now != self._stale
            self._stale = stale_now
            if changed:
                self.version += 1
            return changed

    def snapshot(self, now: float, wall: float) -> dict[str, Any]:
        """The model as published on the `world` topic, estimated for `now` (monotonic) = `wall`."""
        with self._lock:
            objects = [o.as_dict(now, self.config, self.stale_s)
                       for o in sorted(self._objects.values(), key=lambda o: o.id)]
            frames = {cam: {"frame": f["frame"], "time": f["time"], "detections": list(f["detections"]),
                            "stale": now - f["seen"] > self.stale_s}
                      for cam, f in self._camera_frames.items()}
        return {"objects": objects, "updated": wall, "frame": "workspace", "camera_frames": frames,
                "stale_s": round(self.stale_s, 3),
                "max_uncertainty_mm": self.config.max_uncertainty_mm}

    def __len__(self) -> int:
        return len(self._objects)
