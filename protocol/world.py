"""The tracker's world model evaluated at a moment: where each object is estimated to be then,
and how sure that is.

The tracker publishes each object's state at the model's moment (`updated`): the estimated
`position_mm`, a `velocity_mm_s`, the age of its last detection (`measured_age_s`) and the
constant-velocity filter's spread (`filter`). Carried along its velocity, an object's estimate
at any later moment follows with no new message:

    position(age) = position_mm + velocity × (min(age, stale_s) − min(measured_age_s, stale_s))
    σ²(a)         = p + 2·a·pv + a²·v + acceleration² · a⁴ / 4        (per axis, a = age)
    uncertainty   = 2.45 · σ                                         (a 95 % circle)

An object is carried on for at most `stale_s` after its detection, then held. It is `stale`
once its detection is older than `stale_s` or its uncertainty passes `max_uncertainty_mm`.

Times: a moment is a reading of the *receiver's* monotonic clock (the clock that stamps a
message's `t_receive_ns`, e.g. `captured_locally_ns(frame)` for a frame's capture), and the
age of the model at it is `(t − t_receive_ns) + (t_publish_ns − updated)` — each difference on
one clock, never the tracker's clock compared with the receiver's.

    world = sub.message(topics.world())
    for obj in world.objects():
        where = obj.at(time.monotonic_ns())    # Estimate: x, y, z, uncertainty_mm, stale
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RADIUS_95 = 2.4477  # a 2-D gaussian with σ per axis: 95 % of it within 2.4477 σ


def spread(filter_: Mapping[str, float], age_s: float) -> float:
    """Per-axis variance (mm²) of a constant-velocity estimate `age_s` after its detection."""
    a = max(0.0, age_s)
    accel = filter_["acceleration_mm_s2"]
    var = (filter_["position_var_mm2"] + 2 * a * filter_["covariance_mm2_s"]
           + a * a * filter_["velocity_var_mm2_s2"] + accel * accel * a ** 4 / 4)
    return max(0.0, var)


def radius_mm(variance: float) -> float:
    """The 95 % radius (mm) of a per-axis variance."""
    return RADIUS_95 * math.sqrt(max(0.0, variance))


@dataclass(frozen=True, slots=True)
class Estimate:
    """Where an object is estimated to be at one moment: mm in the workspace frame,
    `uncertainty_mm` a 95 % radius, `age_s` since the detection it rests on."""

    x: float
    y: float
    z: float
    uncertainty_mm: float
    age_s: float
    stale: bool


def object_at(obj: Mapping[str, Any], later_s: float, stale_s: float | None,
              max_uncertainty_mm: float | None) -> dict[str, Any]:
    """`obj` as published, re-evaluated `later_s` seconds after the model's moment. An object
    without a velocity (an older tracker's) or with values that are not finite numbers is
    returned as it is."""
    try:
        p, v, f = obj["position_mm"], obj["velocity_mm_s"], obj["filter"]
        age0 = float(obj["measured_age_s"])
        x, y, z = float(p["x"]), float(p["y"]), float(p["z"])
        vx, vy = float(v["x"]), float(v["y"])
        age = age0 + max(0.0, later_s)
        horizon = stale_s if stale_s is not None else math.inf
        moved = min(age, horizon) - min(age0, horizon)
        radius = radius_mm(spread(f, age))
    except (KeyError, TypeError, ValueError, OverflowError):
        return dict(obj)
    if not all(math.isfinite(n) for n in (x, y, vx, vy, age, radius)):
        return dict(obj)  # JSON has no infinities: what cannot be carried on stays as published
    if stale_s is None and max_uncertainty_mm is None:
        stale = bool(obj.get("stale"))
    else:
        stale = (stale_s is not None and age > stale_s) or \
            (max_uncertainty_mm is not None and radius > max_uncertainty_mm)
    return {**obj, "position_mm": {"x": round(x + vx * moved, 2), "y": round(y + vy * moved, 2),
                                   "z": z},
            "uncertainty_mm": round(radius, 2), "measured_age_s": round(age, 3),
            "stale": bool(stale)}


def model_at(model: Mapping[str, Any], later_s: float) -> dict[str, Any]:
    """The whole model `later_s` seconds after its moment (`updated`): every object's estimate
    carried on, its uncertainty and `stale` re-evaluated."""
    out = dict(model)
    stale_s = number(model.get("stale_s"))
    bound = number(model.get("max_uncertainty_mm"))
    objects = model.get("objects")
    if isinstance(objects, list):
        out["objects"] = [object_at(o, later_s, stale_s, bound) if isinstance(o, Mapping) else o
                          for o in objects]
    return out


class WorldObject:
    """One object of a received world model; `at(t_ns)` estimates it at a moment of the
    receiver's monotonic clock. `data` is the object as published."""

    __slots__ = ("_model_ns", "_stale_s", "_bound", "data")

    def __init__(self, data: Mapping[str, Any], model_ns: int, stale_s: float | None,
                 max_uncertainty_mm: float | None) -> None:
        self.data = dict(data)
        self._model_ns = model_ns
        self._stale_s = stale_s
        self._bound = max_uncertainty_mm

    @property
    def id(self) -> str:
        return str(self.data.get("id", ""))

    @property
    def label(self) -> str:
        return str(self.data.get("label", ""))

    def at(self, t_ns: int) -> Estimate:
        """The estimate at `t_ns` on the receiver's monotonic clock (as `t_receive_ns`)."""
        later = (t_ns - self._model_ns) / 1e9
        obj = object_at(self.data, max(0.0, later), self._stale_s, self._bound)
        p = obj.get("position_mm") or {}
        return Estimate(x=float(p.get("x", math.nan)), y=float(p.get("y", math.nan)),
                        z=float(p.get("z", math.nan)),
                        uncertainty_mm=float(obj.get("uncertainty_mm", math.nan)),
                        age_s=float(obj.get("measured_age_s", math.nan)),
                        stale=bool(obj.get("stale", False)))

    def __repr__(self) -> str:
        return f"WorldObject({self.id!r}, {self.label!r})"


def model_moment_ns(model: Mapping[str, Any], t_publish_ns: int, t_receive_ns: int) -> int:
    """The model's moment (`updated`) on the receiver's monotonic clock: its receive time less
    the tracker's own wait from `updated` to publishing (one clock each)."""
    updated = number(model.get("updated"))
    waited = max(0, t_publish_ns - int(updated * 1e9)) if updated is not None else 0
    return t_receive_ns - waited


def number(value: Any) -> float | None:
    """`value` as a finite float, else None (a model from the wire may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


__all__ = ["Estimate", "WorldObject", "model_at", "model_moment_ns", "object_at", "radius_mm", "spread"]
