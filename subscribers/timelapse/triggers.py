"""When to take a frame: prints and their triggers, from what Moonraker reports.

    prints = PrintTriggers(mode="layer", interval_s=10.0)
    events = prints.status(print_stats_update, now)   # from notify_status_update
    events = prints.gcode_response(line, now)           # from notify_gcode_response
    events = prints.tick(now)                           # hyperlapse: every interval while printing

Each call returns the events it caused: `PrintStarted`, `Trigger`, `PrintEnded`. Time is passed
in (monotonic seconds), so the rules are tested without sleeping.

- A print starts when `print_stats.state` becomes "printing" and ends when it leaves
  "printing"/"paused" ("complete", "cancelled", "error", "standby"); nothing is recorded while
  idle or paused.
- layer: a trigger on every change of `print_stats.info.current_layer` (set by the slicer's
  `SET_PRINT_STATS_INFO CURRENT_LAYER=…`), or on each `TIMELAPSE_TAKE_FRAME` macro's marker
  line. A print whose G-code calls the macro is driven by it alone from its first marker on,
  so a slicer setup that does both never takes two frames per layer.
- hyperlapse: a trigger at the start and then every `interval_s` while printing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The line the documented TIMELAPSE_TAKE_FRAME macro writes with action_respond_info; Moonraker
# forwards it as notify_gcode_response "// CAMFABRIC_TIMELAPSE_FRAME".
FRAME_MARKER = "CAMFABRIC_TIMELAPSE_FRAME"
_MARKER_LINE = re.compile(r"^(?://|echo:)?\s*" + FRAME_MARKER + r"\s*$")
ACTIVE = ("printing", "paused")


@dataclass(frozen=True, slots=True)
class PrintStarted:
    print_id: str
    filename: str
    resumed: bool = False  # carrying on with a recording this service began before a restart


@dataclass(frozen=True, slots=True)
class Trigger:
    """Take a frame for `print_id`: the first one captured `settle_s` after `t`."""

    print_id: str
    t: float  # monotonic seconds, when the cause was received
    reason: str  # "layer", "macro" or "interval"
    layer: int | None = None


@dataclass(frozen=True, slots=True)
class PrintEnded:
    print_id: str
    state: str  # the print_stats state that ended it, or "lost" when the printer forgot it


Event = PrintStarted | Trigger | PrintEnded


def print_stem(filename: str) -> str:
    """The part of a print's id that comes from its file: the stem, safe as a file name."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "print"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "print"


def print_name(filename: str, wall: float) -> str:
    """A print's id: its file's stem and the local start time, safe as a file name."""
    return f"{print_stem(filename)}_{time.strftime('%Y%m%d_%H%M%S', time.localtime(wall))}"


class PrintTriggers:
    """The print lifecycle and its triggers, from Moonraker's `print_stats` and G-code lines."""

    def __init__(self, mode: str = "layer", interval_s: float = 10.0,
                 wall: Any = time.time, resume: Callable[[str, float], str | None] | None = None) -> None:
        """`resume(filename, started)`, when given, names an unfinished recording of that file
        made since `started` (wall seconds: now less print_stats.total_duration) to carry on
        with, for a print already running when this process first hears of it (a restart of
        this service mid-print), instead of starting a second video of the same print."""
        self.mode = mode
        self.interval_s = interval_s
        self.wall = wall
        self.resume = resume
        self.stats: dict[str, Any] = {}
        self.print_id: str | None = None
        self._filename = ""
        self._layer: int | None = None
        self._macro_driven = False
        self._next_due: float | None = None

    @property
    def state(self) -> str:
        return str(self.stats.get("state") or "unknown")

    @property
    def recording(self) -> bool:
        return self.print_id is not None and self.state == "printing"

    def status(self, print_stats: dict[str, Any], now: float, *, full: bool = False) -> list[Event]:
        """Apply a `print_stats` update (only the changed fields; `full` for a whole object, as
        a subscription's first answer gives after a reconnect)."""
        if full:
            self.stats = {}
        for key, value in print_stats.items():
            if key == "info" and isinstance(value, dict):
                merged = dict(self.stats.get("info") or {})
                merged.update(value)
                self.stats["info"] = merged
            else:
                self.stats[key] = value
        events: list[Event] = []
        state = self.state
        filename = str(self.stats.get("filename") or "")
        if self.print_id is not None and (state not in ACTIVE or (full and filename != self._filename)):
            events.append(self._end(state if state not in ACTIVE else "lost"))
        if self.print_id is None and state == "printing":
            events.extend(self._start(filename, now, already_running=full))
        elif self.print_id is not None and state == "printing" and self._next_due is None \
                and self.mode == "hyperlapse":
            self._next_due = now  # resumed after a pause: the interval starts again
        if self.print_id is not None and state == "paused":
            self._next_due = None
        layer = self._current_layer()
        if self.print_id is not None and layer is not None and layer != self._layer:
            self._layer = layer
            if self.mode == "layer" and state == "printing" and not self._macro_driven:
                events.append(Trigger(self.print_id, now, "layer", layer))
        return events

    def gcode_response(self, line: str, now: float) -> list[Event]:
        """A G-code response line; the frame macro's marker is a trigger while printing."""
        if not _MARKER_LINE.match(line.strip()) or not self.recording or self.mode != "layer":
            return []
        self._macro_driven = True
        return [Trigger(self.print_id, now, "macro", self._current_layer())]

    def tick(self, now: float) -> list[Event]:
        """Hyperlapse: a trigger when the interval is due (at most one per call: a late tick never
        makes a burst)."""
        if self.mode != "hyperlapse" or not self.recording or self._next_due is None:
            return []
        if now < self._next_due:
            return []
        self._next_due = max(self._next_due + self.interval_s, now)
        return [Trigger(self.print_id, now, "interval", self._current_layer())]

    def next_due(self) -> float | None:
        """When `tick` will next trigger (monotonic seconds), or None."""
        return self._next_due if self.mode == "hyperlapse" and self.recording else None

    def lost(self) -> list[Event]:
        """The printer forgot the print (Klipper restarted): end it with what was recorded."""
        self.stats = {}
        return [self._end("lost")] if self.print_id is not None else []

    def _start(self, filename: str, now: float, already_running: bool = False) -> list[Event]:
        resumed = None
        elapsed = self.stats.get("total_duration")
        if already_running and self.resume is not None and isinstance(elapsed, int | float) \
                and not isinstance(elapsed, bool) and elapsed > 0:
            resumed = self.resume(filename, self.wall() - float(elapsed))
        self.print_id = resumed or print_name(filename, self.wall())
        self._filename = filename
        self._layer = self._current_layer()
        self._macro_driven = False
        self._next_due = now if self.mode == "hyperlapse" else None
        events: list[Event] = [PrintStarted(self.print_id, filename, resumed=resumed is not None)]
        events.extend(self.tick(now))
        return events

    def _end(self, state: str) -> PrintEnded:
        ended = PrintEnded(self.print_id or "", state)
        self.print_id = None
        self._layer = None
        self._next_due = None
        return ended

    def _current_layer(self) -> int | None:
        info = self.stats.get("info")
        layer = info.get("current_layer") if isinstance(info, dict) else None
        return layer if isinstance(layer, int) and not isinstance(layer, bool) else None


__all__ = ["FRAME_MARKER", "Event", "PrintEnded", "PrintStarted", "PrintTriggers", "Trigger", "print_name",
           "print_stem"]
