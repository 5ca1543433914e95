"""An object's motion on the table: a constant-velocity Kalman filter, one per object.

The state is where the object's marker ray meets the table and its velocity there (mm, mm/s),
as of its last overhead detection; x and y are filtered alike and at the same moments, so one
2×2 covariance (`pp`, `pv`, `vv`, per axis) serves both. Between detections the object is
assumed to move at constant velocity, disturbed by accelerations of about
`acceleration_mm_s2` (a piecewise-constant white acceleration); each detection is a position
measured with `measurement_mm` of noise. A new object's velocity is unknown: 0 with a spread
that puts `max_speed_mm_s` at the edge of its 95 % circle.

With the defaults (0.5 mm, 0.5 mm/s², one detection per 2 s) the filter trusts a detection
~93 % for the position and takes ~half of the surprise into the velocity: an object that
stops or reverses is followed within two detections without ringing, and a still object's
velocity settles at zero (its detections repeat). `protocol.world` evaluates the published
state at any later moment with the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...protocol.world import RADIUS_95, spread
from .config import WorldConfig


@dataclass(slots=True)
class Motion:
    """The filter's state at `seen` (monotonic s): table-plane position, velocity, covariance."""

    x: float
    y: float
    seen: float
    vx: float = 0.0
    vy: float = 0.0
    pp: float = 0.0
    pv: float = 0.0
    vv: float = 0.0

    @classmethod
    def start(cls, xy: tuple[float, float], seen: float, config: WorldConfig) -> Motion:
        v_sigma = config.max_speed_mm_s / RADIUS_95
        return cls(x=xy[0], y=xy[1], seen=seen, pp=config.measurement_mm ** 2, vv=v_sigma ** 2)

    def position(self, t: float, horizon: float) -> tuple[float, float]:
        """Where it is carried to at `t`: along its velocity for at most `horizon` s."""
        a = min(max(0.0, t - self.seen), horizon)
        return self.x + self.vx * a, self.y + self.vy * a

    def spread(self, config: WorldConfig) -> dict[str, float]:
        """The covariance as published (`filter`; in the table plane, before parallax)."""
        return {"position_var_mm2": self.pp, "covariance_mm2_s": self.pv,
                "velocity_var_mm2_s2": self.vv, "acceleration_mm_s2": config.acceleration_mm_s2}

    def update(self, xy: tuple[float, float], seen: float, config: WorldConfig) -> None:
        """Take a detection at `seen` (not earlier than the last one)."""
        a = max(0.0, seen - self.seen)
        q = config.acceleration_mm_s2 ** 2
        pp = spread(self.spread(config), a)
        pv = self.pv + a * self.vv + q * a ** 3 / 2
        vv = self.vv + q * a * a
        s = pp + config.measurement_mm ** 2
        kp, kv = (pp / s, pv / s) if s > 0 else (1.0, 0.0)
        px, py = self.x + self.vx * a, self.y + self.vy * a
        ex, ey = xy[0] - px, xy[1] - py
        self.x, self.y = px + kp * ex, py + kp * ey
        self.vx, self.vy = self.vx + kv * ex, self.vy + kv * ey
        self.pp, self.pv, self.vv = (1 - kp) * pp, (1 - kp) * pv, vv - kv * pv
        self.seen = seen
