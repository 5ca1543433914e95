"""A simulated table with ArUco-tagged objects on it, seen by the robot cell's cameras.

The scene (all lengths in millimetres, z up, origin at one table corner):

- a 400 x 300 mm table with four reference markers flat at its corners (ids 0-3, for the
  overhead camera's homography);
- a back board at y = 320 and two posts at y = 40 outside the table, carrying reference
  markers at known heights (ids 4-11, for the side camera's calibration);
- up to three boxes (ids 20, 21, 22) of known heights sliding along their own lanes, each with
  a marker on its top and one on its front face (the face towards the side camera) whose top
  edge sits `FRONT_TAG_TOP_MM` below the box's top.

Views: `overhead` (straight down from 650 mm), `side_profile` (from y = -450 mm at 60 mm
height, looking along +y) and `end_effector` (a close-up looking down, drifting like an arm).
Motion is a pure function of scene time, so a test knows where everything was at any moment.

`render(view, t)` is the pure function tests use: the image and the ground truth (every
object's position and the pixel where each marker's centre lands). `TabletopSource` wraps it
in the Source interface and draws the camera name, frame counter and capture time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import cv2
import numpy as np

from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.pacing import FramePacer
from camfabric.capture_node.source import Capture, Source
from camfabric.capture_node.sources.caption import draw_caption, frame_stamp
from camfabric.runtime.config import bounded
from camfabric.runtime.errors import ConfigError

ARUCO_DICTIONARY = "DICT_4X4_50"
TABLE_MM = (400.0, 300.0)
TABLE_TAG_MM = 40.0
SIDE_TAG_MM = 40.0
TOP_TAG_MM = 32.0
FRONT_TAG_MM = 30.0
FRONT_TAG_TOP_MM = 5.0  # quiet zone between a box's top and its front marker's top edge
BOX_MM = 50.0
BACKGROUND = np.array((60, 55, 50), np.uint8)  # the floor around the table

# Reference markers: id -> centre (x, y, z) in mm.
TABLE_REFERENCES = {0: (30.0, 30.0, 0.0), 1: (370.0, 30.0, 0.0), 2: (370.0, 270.0, 0.0),
                    3: (30.0, 270.0, 0.0)}
SIDE_REFERENCES = {4: (70.0, 320.0, 50.0), 5: (330.0, 320.0, 50.0), 6: (70.0, 320.0, 150.0),
                   7: (330.0, 320.0, 150.0), 8: (-45.0, 40.0, 40.0), 9: (-45.0, 40.0, 120.0),
                   10: (445.0, 40.0, 40.0), 11: (445.0, 40.0, 120.0)}

ViewName = Literal["overhead", "side_profile", "end_effector"]


@dataclass(frozen=True, slots=True)
class TaggedBox:
    """One object of the scene: a box with a marker on top and on its front face."""

    marker_id: int
    label: str
    height_mm: float
    color: tuple[int, int, int]
    lane_y: float
    period_s: float
    phase: float


BOXES = (
    TaggedBox(20, "red_block", 45.0, (50, 50, 200), 90.0, 60.0, 0.0),
    TaggedBox(21, "green_block", 60.0, (60, 170, 60), 150.0, 75.0, 2.1),
    TaggedBox(22, "blue_block", 80.0, (200, 90, 40), 210.0, 90.0, 4.2),
)
MARKER_LABELS = {str(b.marker_id): b.label for b in BOXES}


def box_pose(box: TaggedBox, t: float) -> tuple[float, float, float]:
    """(x, y, yaw in radians) of the box's centre at scene time `t` s."""
    w = 2 * math.pi / box.period_s
    x = 200.0 + 100.0 * math.sin(w * t + box.phase)
    y = box.lane_y + 3.0 * math.sin(0.7 * w * t + 2 * box.phase)
    yaw = math.radians(8.0) * math.sin(0.5 * w * t + box.phase)
    return x, y, yaw


@dataclass(frozen=True, slots=True)
class View:
    """A pinhole camera in the scene: pose, intrinsics and optional lens distortion."""

    name: str
    position: tuple[float, float, float]
    forward: tuple[float, float, float]
    right: tuple[float, float, float]
    focal_px: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.focal_px, 0, (self.width - 1) / 2],
                         [0, self.focal_px, (self.height - 1) / 2], [0, 0, 1]], dtype=np.float64)

    @property
    def rotation(self) -> np.ndarray:
        fwd, right = np.asarray(self.forward, float), np.asarray(self.right, float)
        return np.stack([right, np.cross(fwd, right), fwd])

    def project(self, points: np.ndarray, distort: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) and depths (N,) of world points (N, 3); `distort` applies the lens."""
        cam = (np.asarray(points, float) - np.asarray(self.position)) @ self.rotation.T
        depth = cam[:, 2]
        if distort and any(self.distortion):
            rvec = cv2.Rodrigues(self.rotation)[0]
            tvec = -self.rotation @ np.asarray(self.position, float)
            pix, _ = cv2.projectPoints(np.asarray(points, float).reshape(-1, 1, 3), rvec, tvec,
                                       self.camera_matrix, np.asarray(self.distortion, float))
            return pix.reshape(-1, 2), depth
        safe = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        k = self.camera_matrix
        return np.stack([k[0, 0] * cam[:, 0] / safe + k[0, 2], k[1, 1] * cam[:, 1] / safe + k[1, 2]],
                        axis=1), depth


def make_view(name: ViewName, width: int, height: int, t: float = 0.0,
              distortion: tuple[float, ...] = ()) -> View:
    """The scene's camera `name` at image size `width` x `height` (the arm moves with `t`)."""
    if name == "overhead":
        return View(name, (200.0, 150.0, 650.0), (0, 0, -1), (1, 0, 0), 1.75 * height,
                    width, height, tuple(distortion))
    if name == "side_profile":
        return View(name, (200.0, -450.0, 60.0), (0, 1, 0), (1, 0, 0), 0.89 * width,
                    width, height, tuple(distortion))
    if name == "end_effector":
        x = 200.0 + 70.0 * math.sin(2 * math.pi * t / 30.0)
        y = 150.0 + 40.0 * math.sin(2 * math.pi * t / 23.0)
        return View(name, (x, y, 380.0), (0, 0, -1), (1, 0, 0), 1.6 * height,
                    width, height, tuple(distortion))
    raise ValueError(f"unknown tabletop view {name!r}")


# -- textures ------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _marker(marker_id: int, px: int) -> np.ndarray:
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, ARUCO_DICTIONARY))
    return cv2.cvtColor(cv2.aruco.generateImageMarker(dictionary, marker_id, px), cv2.COLOR_GRAY2BGR)


def _paste_marker(texture: np.ndarray, marker_id: int, centre_mm: tuple[float, float],
                  size_mm: float, ppm: float, quiet_mm: float) -> None:
    """Draw a marker with a white quiet zone into a texture at `ppm` pixels per mm.

    `centre_mm` is (column, row) in texture millimetres from its top-left corner.
    """
    cx, cy = centre_mm[0] * ppm, centre_mm[1] * ppm
    half_q = (size_mm / 2 + quiet_mm) * ppm
    cv2.rectangle(texture, (round(cx - half_q), round(cy - half_q)),
                  (round(cx + half_q) - 1, round(cy + half_q) - 1), (255, 255, 255), -1)
    px = round(size_mm * ppm)
    x0, y0 = round(cx - px / 2), round(cy - px / 2)
    texture[y0:y0 + px, x0:x0 + px] = _marker(marker_id, px)


@lru_cache(maxsize=1)
def _table_texture() -> np.ndarray:
    ppm = 2.0
    w, h = round(TABLE_MM[0] * ppm), round(TABLE_MM[1] * ppm)
    tex = np.full((h, w, 3), (170, 185, 195), np.uint8)
    for x in range(0, w, round(50 * ppm)):
        tex[:, x] = (140, 150, 160)
    for y in range(0, h, round(50 * ppm)):
        tex[y, :] = (140, 150, 160)
    for marker_id, (x, y, _) in TABLE_REFERENCES.items():
        _paste_marker(tex, marker_id, (x, TABLE_MM[1] - y), TABLE_TAG_MM, ppm, 6.0)
    return tex


def _board_texture(width_mm: float, height_mm: float, tags: dict[int, tuple[float, float]],
                   origin: tuple[float, float]) -> np.ndarray:
    """A vertical board facing -y; `tags` maps id -> (x, z) centres, `origin` = its (x, z) min."""
    ppm = 2.0
    tex = np.full((round(height_mm * ppm), round(width_mm * ppm), 3), (90, 95, 100), np.uint8)
    for marker_id, (x, z) in tags.items():
        _paste_marker(tex, marker_id, (x - origin[0], height_mm - (z - origin[1])), SIDE_TAG_MM, ppm, 6.0)
    return tex


@lru_cache(maxsize=8)
def _box_textures(box: TaggedBox) -> tuple[np.ndarray, np.ndarray]:
    ppm = 4.0
    side = round(BOX_MM * ppm)
    top = np.full((side, side, 3), box.color, np.uint8)
    _paste_marker(top, box.marker_id, (BOX_MM / 2, BOX_MM / 2), TOP_TAG_MM, ppm, 6.0)
    front = np.full((max(1, round(box.height_mm * ppm)), side, 3), box.color, np.uint8)
    if box.height_mm >= FRONT_TAG_MM + 2 * FRONT_TAG_TOP_MM:  # a flat tile has no front marker
        centre_row = FRONT_TAG_TOP_MM + FRONT_TAG_MM / 2
        _paste_marker(front, box.marker_id, (BOX_MM / 2, centre_row), FRONT_TAG_MM, ppm, FRONT_TAG_TOP_MM)
    return top, front


# -- scene geometry ------------------------------------------------------------------------------
Quad = tuple[np.ndarray, Any]  # (4x3 corners TL, TR, BR, BL; texture array or BGR colour)


@lru_cache(maxsize=1)
def _static_quads() -> tuple[Quad, ...]:
    w, h = TABLE_MM
    quads: list[Quad] = [(np.array([[0, h, 0], [w, h, 0], [w, 0, 0], [0, 0, 0]], float), _table_texture())]
    back = {i: (p[0], p[2]) for i, p in SIDE_REFERENCES.items() if p[1] > 300}
    quads.append((np.array([[-20, 320, 190], [420, 320, 190], [420, 320, 0], [-20, 320, 0]], float),
                  _board_texture(440, 190, back, (-20, 0))))
    for x_post in (-45.0, 445.0):
        tags = {i: (p[0], p[2]) for i, p in SIDE_REFERENCES.items() if p[0] == x_post}
        x0, x1 = x_post - 30, x_post + 30
        quads.append((np.array([[x0, 40, 160], [x1, 40, 160], [x1, 40, 0], [x0, 40, 0]], float),
                      _board_texture(60, 160, tags, (x0, 0))))
    return tuple(quads)


def _box_quads(box: TaggedBox, x: float, y: float, yaw: float) -> list[Quad]:
    a, hz = BOX_MM / 2, box.height_mm
    c, s = math.cos(yaw), math.sin(yaw)

    def at(dx: float, dy: float, z: float) -> list[float]:
        return [x + c * dx - s * dy, y + s * dx + c * dy, z]

    top_tex, front_tex = _box_textures(box)
    shade = tuple(int(v * 0.6) for v in box.color)
    return [
        (np.array([at(-a, a, hz), at(a, a, hz), at(a, -a, hz), at(-a, -a, hz)]), top_tex),
        (np.array([at(-a, -a, hz), at(a, -a, hz), at(a, -a, 0), at(-a, -a, 0)]), front_tex),
        (np.array([at(a, a, hz), at(-a, a, hz), at(-a, a, 0), at(a, a, 0)]), shade),
        (np.array([at(a, -a, hz), at(a, a, hz), at(a, a, 0), at(a, -a, 0)]), shade),
        (np.array([at(-a, a, hz), at(-a, -a, hz), at(-a, -a, 0), at(-a, a, 0)]), shade),
    ]


def _draw_quads(image: np.ndarray, view: View, quads: list[Quad]) -> None:
    """Painter's algorithm: faces turned towards the camera, the farthest first."""
    eye = np.asarray(view.position)
    visible = []
    for corners, paint in quads:
        normal = np.cross(corners[3] - corners[0], corners[1] - corners[0])
        centre = corners.mean(axis=0)
        if np.dot(normal, eye - centre) <= 0:
            continue
        visible.append((float(np.linalg.norm(eye - centre)), corners, paint))
    for _, corners, paint in sorted(visible, key=lambda item: -item[0]):
        pix, depth = view.project(corners)
        if np.any(depth < 1.0):
            continue
        _paint(image, pix, paint)


def _paint(image: np.ndarray, pix: np.ndarray, paint: Any) -> None:
    h, w = image.shape[:2]
    x0, y0 = np.floor(pix.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pix.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    if not isinstance(paint, np.ndarray):
        cv2.fillConvexPoly(image, np.round(pix * 16).astype(np.int32), paint, cv2.LINE_AA, shift=4)
        return
    th, tw = paint.shape[:2]
    src = np.array([[-0.5, -0.5], [tw - 0.5, -0.5], [tw - 0.5, th - 0.5], [-0.5, th - 0.5]], np.float32)
    dst = (pix - [x0, y0]).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    roi = np.ascontiguousarray(image[y0:y1, x0:x1])
    cv2.warpPerspective(paint, matrix, (x1 - x0, y1 - y0), dst=roi, flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_TRANSPARENT)
    image[y0:y1, x0:x1] = roi


@lru_cache(maxsize=8)
def _distortion_maps(width: int, height: int, focal_px: float,
                     distortion: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the distorted image, where it comes from in the ideal pinhole image."""
    matrix = np.array([[focal_px, 0, (width - 1) / 2], [0, focal_px, (height - 1) / 2], [0, 0, 1]])
    us, vs = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = np.stack([us.ravel(), vs.ravel()], axis=1).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(grid, matrix, np.asarray(distortion, float), P=matrix)
    ideal = ideal.reshape(height, width, 2)
    return ideal[..., 0].astype(np.float32), ideal[..., 1].astype(np.float32)


@lru_cache(maxsize=8)
def _static_background(view: View) -> np.ndarray:
    return _render_static(view)


def render(view: View | ViewName, t: float, *, width: int = 640, height: int = 360,
           distortion: tuple[float, ...] = (), boxes: tuple[TaggedBox, ...] = BOXES,
           poses: dict[int, tuple[float, float, float]] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The image a camera sees at scene time `t`, and the ground truth of that moment.

    `view` is a View or a view name (then `width`, `height`, `distortion` make it). `poses`
    overrides box positions: marker id -> (x, y, yaw). The truth is
    {"view", "objects": [{"marker_id", "label", "x", "y", "z", "yaw", "pixel", "front_pixel"}],
    "references": {id: [u, v]}} with z the box's height and pixels where marker centres land.
    """
    if isinstance(view, str):
        view = make_view(view, width, height, t, distortion)
    image = _static_background(view).copy() if view.name != "end_effector" else _render_static(view)
    quads: list[Quad] = []
    objects = []
    for box in boxes:
        x, y, yaw = poses[box.marker_id] if poses and box.marker_id in poses else box_pose(box, t)
        quads.extend(_box_quads(box, x, y, yaw))
        top = np.array([[x, y, box.height_mm]])
        front_z = box.height_mm - FRONT_TAG_TOP_MM - FRONT_TAG_MM / 2
        front = np.array([[x - math.sin(yaw) * -BOX_MM / 2, y + math.cos(yaw) * -BOX_MM / 2, front_z]])
        objects.append({
            "marker_id": box.marker_id, "label": box.label, "x": x, "y": y, "z": box.height_mm,
            "yaw": yaw, "pixel": view.project(top, distort=True)[0][0].tolist(),
            "front_pixel": view.project(front, distort=True)[0][0].tolist(),
        })
    _draw_quads(image, view, quads)
    if any(view.distortion):
        mapx, mapy = _distortion_maps(view.width, view.height, view.focal_px, view.distortion)
        image = cv2.remap(image, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    refs = {**TABLE_REFERENCES, **SIDE_REFERENCES}
    ref_pix = view.project(np.array(list(refs.values())), distort=True)[0]
    truth = {"view": view.name, "t": t, "objects": objects,
             "references": {i: ref_pix[k].tolist() for k, i in enumerate(refs)}}
    return image, truth


@lru_cache(maxsize=4)
def _floor(width: int, height: int) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[...] = BACKGROUND
    return image


def _render_static(view: View) -> np.ndarray:
    image = _floor(view.width, view.height).copy()
    _draw_quads(image, view, list(_static_quads()))
    return image


# -- the Source ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    """`[node.cameras.source]` keys of a tabletop camera (besides kind = "tabletop")."""

    view: ViewName = "overhead"
    speed: float = bounded(1.0, 0.0, 20.0)  # scene time = wall time x speed (0: a still scene)
    distortion: tuple[float, ...] = field(default=())  # k1, k2, p1, p2[, k3]: OpenCV's model
    objects: int = bounded(3, 0, len(BOXES))
    label: str = ""  # drawn on the picture; default: the camera's name

    def __post_init__(self) -> None:
        if len(self.distortion) not in (0, 4, 5):
            raise ConfigError("distortion", f"expected 4 or 5 coefficients (k1, k2, p1, p2[, k3]), "
                              f"got {len(self.distortion)}")


def create(options: Options, camera: Any) -> TabletopSource:
    """A tabletop source drawing `options.view` at the camera's resolution and fps."""
    w, h = camera.resolution
    return TabletopSource(w, h, camera.fps, view=options.view, speed=options.speed,
                          distortion=options.distortion, objects=options.objects,
                          label=options.label or camera.name)


class TabletopSource(Source):
    """Renders the tabletop scene at `fps`; scene time follows the wall clock, so every camera
    of the scene (in any process) sees the same moment."""

    kind = "tabletop"
    probe_formats = ("BGR3",)

    def __init__(self, width: int, height: int, fps: float, *, view: ViewName = "overhead",
                 speed: float = 1.0, distortion: tuple[float, ...] = (), objects: int = 3,
                 label: str = "tabletop", clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.width, self.height = int(width), int(height)
        self.pacer = FramePacer(fps, clock)
        self.view_name = view
        self.speed = speed
        self.distortion = tuple(distortion)
        self.boxes = BOXES[:objects]
        self.label = label
        self.clock = clock
        self.wall_clock = wall_clock
        self.frames = 0
        self._opened = False
        self._scale = max(0.35, self.height / 900)

    @property
    def device(self) -> str:
        return f"tabletop:{self.view_name}:{self.width}x{self.height}@{self.pacer.fps:g}"

    def open(self) -> None:
        make_view(self.view_name, self.width, self.height)  # fails early on a bad view
        self._opened = True
        self.pacer.restart()

    def read(self, timeout: float) -> Capture:
        if not self._opened:
            raise SourceError("tabletop source read before open")
        self.pacer.wait(timeout)
        t_capture_ns = self.wall_clock()
        image, _ = render(self.view_name, scene_time(t_capture_ns, self.speed), width=self.width,
                          height=self.height, distortion=self.distortion, boxes=self.boxes)
        self._overlay(image, t_capture_ns)
        self.frames += 1
        return Capture(t_capture_ns=t_capture_ns, w=self.width, h=self.height, image=image)

    def close(self) -> None:
        self._opened = False

    def interrupt(self) -> None:
        self.pacer.interrupt()

    def _overlay(self, image: np.ndarray, t_capture_ns: int) -> None:
        scale = 0.9 * self._scale
        draw_caption(image, self.label, (6, int(22 * self._scale) + 4), scale)
        draw_caption(image, frame_stamp(self.frames, t_capture_ns), (6, self.height - 8), scale)


def scene_time(t_ns: int, speed: float = 1.0) -> float:
    """Scene time (s) of a wall-clock moment: what `render` needs to reproduce a captured frame."""
    return (t_ns / 1e9) * speed
