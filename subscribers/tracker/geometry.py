"""From pixels to millimetres: lens undistortion, the overhead table homography, the side
camera's projection, and the parallax of tall objects.

Models (all lengths in mm, z up from the table):

- **Overhead**: the table is a plane, so table mm <-> (undistorted) pixels is a homography,
  fitted with `cv2.findHomography` to reference markers at known (x, y). A point at height z
  seen at table point p0 really lies at c + (p0 - c) * (cz - z) / cz, with c the camera's
  position (optional, `camera_position_mm`).
- **Side**: a full 3x4 projection matrix P fitted by the direct linear transform (DLT) to
  reference markers at known (x, y, z), not all in one plane. A pixel alone is a ray; the
  height of an object is where that ray passes over the object's (x, y), which the overhead
  camera provides: P·[x, y, z, 1] ~ [u, v, 1] is two equations linear in z, solved by least
  squares.
- **Distortion**: with intrinsics (camera matrix + coefficients), pixel points are undistorted
  with `cv2.undistortPoints(..., P=K)` before either model, so both stay linear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from ...runtime.errors import CamfabricError


class CalibrationError(CamfabricError):
    """Too few or degenerate reference markers to fit a camera model."""


def marker_centre(corners: np.ndarray) -> np.ndarray:
    """The projected centre of a square marker: where its diagonals cross (exact under
    perspective, unlike the mean of the corners)."""
    c = np.asarray(corners, dtype=np.float64).reshape(4, 2)
    p, r = c[0], c[2] - c[0]
    q, s = c[1], c[3] - c[1]
    denom = r[0] * s[1] - r[1] * s[0]
    if abs(denom) < 1e-9:
        return c.mean(axis=0)
    t = ((q[0] - p[0]) * s[1] - (q[1] - p[1]) * s[0]) / denom
    return p + t * r


class Undistorter:
    """Maps pixel points of a distorted lens to the ideal pinhole image (identity without one)."""

    def __init__(self, camera_matrix: Sequence[Sequence[float]] | None = None,
                 distortion: Sequence[float] = ()) -> None:
        self.matrix = None if camera_matrix is None else np.asarray(camera_matrix, dtype=np.float64)
        self.coeffs = np.asarray(distortion, dtype=np.float64) if len(distortion) else None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.matrix is None or self.coeffs is None or not len(pts):
            return pts
        ideal = cv2.undistortPoints(pts.reshape(-1, 1, 2), self.matrix, self.coeffs, P=self.matrix)
        return ideal.reshape(-1, 2)


class TablePlane:
    """The overhead camera's model: (undistorted) pixels <-> table-plane mm by a homography."""

    def __init__(self, references: Mapping[int, Sequence[float]], undistort: Undistorter | None = None,
                 camera_position: Sequence[float] | None = None) -> None:
        self.references = {int(k): (float(v[0]), float(v[1])) for k, v in references.items()}
        self.undistort = undistort or Undistorter()
        self.camera_position = None if camera_position is None else np.asarray(camera_position, float)
        self.homography: np.ndarray | None = None
        self.used: tuple[int, ...] = ()
        self.error_mm = float("nan")

    @property
    def calibrated(self) -> bool:
        return self.homography is not None

    def fit(self, seen: Mapping[int, Sequence[float]]) -> bool:
        """Fit the homography to the reference markers seen (id -> pixel centre); True when it
        changed. Fewer than four known markers keep the previous fit."""
        ids = sorted(i for i in seen if i in self.references)
        if len(ids) < 4:
            return False
        pixels = self.undistort(np.array([seen[i] for i in ids]))
        table = np.array([self.references[i] for i in ids], dtype=np.float64)
        matrix, _ = cv2.findHomography(pixels, table, 0)
        if matrix is None:
            return False
        self.homography, self.used = matrix, tuple(ids)
        self.error_mm = float(np.max(np.linalg.norm(self._apply(pixels) - table, axis=1)))
        return True

    def to_table(self, pixels: np.ndarray) -> np.ndarray:
        """Table-plane mm (N, 2) of pixel points (N, 2) of the raw, distorted image."""
        if self.homography is None:
            raise CalibrationError("overhead camera not calibrated yet (reference markers not seen)")
        return self._apply(self.undistort(pixels))

    def _apply(self, undistorted: np.ndarray) -> np.ndarray:
        pts = np.asarray(undistorted, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.homography).reshape(-1, 2)

    def correct_parallax(self, table_xy: Sequence[float], height: float) -> tuple[float, float]:
        """Where a point at `height` mm really is, given where its ray meets the table."""
        if self.camera_position is None or not height:
            return float(table_xy[0]), float(table_xy[1])
        c = self.camera_position
        scale = (c[2] - height) / c[2]
        return float(c[0] + (table_xy[0] - c[0]) * scale), float(c[1] + (table_xy[1] - c[1]) * scale)


class SideProjection:
    """The side camera's model: a 3x4 projection matrix from reference markers in 3-D."""

    def __init__(self, references: Mapping[int, Sequence[float]],
                 undistort: Undistorter | None = None) -> None:
        self.references = {int(k): tuple(float(x) for x in v) for k, v in references.items()}
        self.undistort = undistort or Undistorter()
        self.matrix: np.ndarray | None = None
        self.used: tuple[int, ...] = ()
        self.error_px = float("nan")

    @property
    def calibrated(self) -> bool:
        return self.matrix is not None

    def fit(self, seen: Mapping[int, Sequence[float]]) -> bool:
        """Fit P to the reference markers seen (id -> pixel); needs six not in one plane."""
        ids = sorted(i for i in seen if i in self.references)
        if len(ids) < 6:
            return False
        world = np.array([self.references[i] for i in ids], dtype=np.float64)
        centred = world - world.mean(axis=0)
        if np.linalg.matrix_rank(centred, tol=1.0) < 3:
            return False  # all in one plane: P is not determined
        pixels = self.undistort(np.array([seen[i] for i in ids]))
        matrix = dlt(world, pixels)
        self.matrix, self.used = matrix, tuple(ids)
        self.error_px = float(np.max(np.linalg.norm(self.project(world) - pixels, axis=1)))
        return True

    def project(self, points: np.ndarray) -> np.ndarray:
        """Undistorted pixels (N, 2) of world points (N, 3)."""
        if self.matrix is None:
            raise CalibrationError("side camera not calibrated yet (reference markers not seen)")
        homog = np.hstack([np.asarray(points, float).reshape(-1, 3), np.ones((len(points), 1))])
        proj = homog @ self.matrix.T
        return proj[:, :2] / proj[:, 2:3]

    def height_at(self, pixel: Sequence[float], x: float, y: float) -> tuple[float, float]:
        """(z, residual px): the height where the ray through `pixel` (raw image) passes over
        table point (x, y), and how far (x, y, z) projects from the pixel."""
        if self.matrix is None:
            raise CalibrationError("side camera not calibrated yet (reference markers not seen)")
        u, v = self.undistort(np.asarray(pixel, float))[0]
        p = self.matrix
        rows = np.stack([p[0] - u * p[2], p[1] - v * p[2]])
        a = rows[:, 2]
        b = rows[:, 0] * x + rows[:, 1] * y + rows[:, 3]
        z = float(-(a @ b) / (a @ a))
        residual = float(np.linalg.norm(self.project(np.array([[x, y, z]]))[0] - [u, v]))
        return z, residual


def dlt(world: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The 3x4 projection matrix mapping world points (N >= 6, 3) to pixels (N, 2), fitted by
    the normalised direct linear transform."""
    world = np.asarray(world, dtype=np.float64)
    pixels = np.asarray(pixels, dtype=np.float64)
    t_img = _normaliser(pixels)
    t_world = _normaliser(world)
    w = (np.hstack([world, np.ones((len(world), 1))]) @ t_world.T)
    p = (np.hstack([pixels, np.ones((len(pixels), 1))]) @ t_img.T)
    rows = []
    for (X, Y, Z, W), (u, v, _) in zip(w, p, strict=True):
        rows.append([X, Y, Z, W, 0, 0, 0, 0, -u * X, -u * Y, -u * Z, -u * W])
        rows.append([0, 0, 0, 0, X, Y, Z, W, -v * X, -v * Y, -v * Z, -v * W])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    normalised = vt[-1].reshape(3, 4)
    matrix = np.linalg.inv(t_img) @ normalised @ t_world
    return matrix / np.linalg.norm(matrix[2, :3])


def _normaliser(points: np.ndarray) -> np.ndarray:
    """Hartley's similarity: centroid to the origin, mean distance sqrt(dim)."""
    dim = points.shape[1]
    centre = points.mean(axis=0)
    scale = np.sqrt(dim) / max(np.mean(np.linalg.norm(points - centre, axis=1)), 1e-12)
    t = np.eye(dim + 1)
    t[:dim, :dim] *= scale
    t[:dim, dim] = -scale * centre
    return t
