"""The gate every detector request passes at send time, and the budget behind it.

One `RequestBudget` holds the rules for a set of cameras; a camera's request may leave only when
`reserve()` says so, just before it is sent:

- it leaves at least `interval_s` after that camera's previous request *left*, and never while
  that camera's previous request is still in flight;
- for a paid detector (Gemini), one token from a bucket of capacity one that refills at
  `per_minute / 60` a second: requests are spread evenly over the minute, never in bursts, and
  among cameras that are due the one that waited longest goes first;
- at most `per_day` requests per Pacific day (Gemini's daily quotas reset at midnight Pacific
  time, https://ai.google.dev/gemini-api/docs/rate-limits);
- pauses that hold every camera: a 429's `retryDelay`, a daily quota until Pacific midnight, and
  an outage's backoff (`camfabric.runtime.backoff.Backoff`), which only a success of a request sent
  *after* the outage began ends.

Every interval, window, pause and expiry is on the monotonic clock (`camfabric.runtime.clock`); the wall
clock answers only the calendar question "which Pacific day is it".

Gemini's quotas belong to the project behind the key, not to a process, so a budget with a
`path` keeps its state in a small JSON file (atomically replaced), read and written under an
exclusive lock on a lock file: trackers of one host that use the same key share it, and a
restart keeps the cameras' last send times, the token bucket, the day's count and any pause.
A second tracker with a different budget for the same key is refused with a message naming
the other one. After a reboot the monotonic clock starts again (the state records the boot), so
pauses are carried over by their wall-clock end instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ...runtime.backoff import Backoff
from ...runtime.clock import SYSTEM_CLOCK, Clock
from .statefile import StateFile, StateFileError, pid_alive

PACIFIC = ZoneInfo("America/Los_Angeles")
# The gate is taken when a request leaves; the server counts when it arrives. One request may
# take longer on its way than the next — a new connection's TCP and TLS set-up (one or two round
# trips: tens to a couple of hundred ms to Google), a thread switch on a loaded machine — and
# then the server sees the two closer together than they left. Each request therefore waits
# this much longer than its interval (and the per-minute spacing), so that the gap the server
# sees holds at `interval_s` whenever one request's way is at most this much slower than the
# next one's (docs/tracker.md).
SEND_SLACK_S = 0.25
WAITING_FRESH_S = 1.0  # a camera that asked within this long still counts as waiting
BudgetError = StateFileError  # the shared budget cannot be used: unwritable, locked, conflicting


def next_pacific_midnight(wall: float) -> float:
    """Epoch seconds of the next midnight in America/Los_Angeles after `wall`."""
    local = dt.datetime.fromtimestamp(wall, PACIFIC)
    tomorrow = (local + dt.timedelta(days=1)).date()
    return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=PACIFIC).timestamp()


def pacific_day(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, PACIFIC).date().isoformat()


def _fresh_state(boot: str) -> dict[str, Any]:
    return {"boot": boot, "cams": {}, "next_token": 0.0, "day": "", "today": 0,
            "paused_until": 0.0, "paused_until_wall": 0.0, "pause_reason": "", "failures": 0,
            "outage_since": None, "owners": {}}


class RequestBudget:
    """The send-time gate of a set of cameras; thread-safe and, with `path`, shared by processes."""

    def __init__(self, *, per_minute: int | None = None, per_day: int | None = None,
                 path: Path | None = None, clock: Clock = SYSTEM_CLOCK, backoff: Backoff | None = None,
                 log: logging.Logger | None = None) -> None:
        self.per_minute = per_minute
        self.per_day = per_day
        self.path = path
        self.clock = clock
        self.backoff = backoff or Backoff(base_s=5.0, cap_s=300.0)
        self.log = log or logging.getLogger(__name__)
        self._store = StateFile(path, fresh=_fresh_state, after_reboot=self._after_reboot,
                                what="tracker.gemini.state_dir", log=self.log)
        self.calls = 0
        self.rate_limited = 0
        self.failures = 0

    @property
    def spacing_s(self) -> float:
        """Seconds between two requests of the budget (the token bucket's refill period)."""
        return 60.0 / self.per_minute + SEND_SLACK_S if self.per_minute else 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> RequestBudget:
        """Create (or join) the shared state; refuse when another live tracker of this key runs
        with a different budget."""
        if self.path is None:
            return self
        self._store.open()
        with self._state() as state:
            mine = {"per_minute": self.per_minute, "per_day": self.per_day}
            for pid, theirs in list(state["owners"].items()):
                if not pid_alive(int(pid)):
                    del state["owners"][pid]
                    continue
                if int(pid) != os.getpid() and {k: theirs.get(k) for k in mine} != mine:
                    raise BudgetError(
                        f"another tracker (pid {pid}) uses the same Gemini key on this host with "
                        f"requests_per_minute={theirs.get('per_minute')}, requests_per_day="
                        f"{theirs.get('per_day')}; this one has {self.per_minute}, {self.per_day}. "
                        f"Trackers sharing a key share its budget: set the same "
                        f"tracker.gemini.requests_per_minute and requests_per_day in both, or stop "
                        f"the other one")
            state["owners"][str(os.getpid())] = mine
        return self

    def close(self) -> None:
        if self.path is None:
            return
        with contextlib.suppress(BudgetError), self._state() as state:
            state["owners"].pop(str(os.getpid()), None)
        self._store.close()

    # -- the gate --------------------------------------------------------------------------------
    def wait_s(self, cam: str, interval_s: float) -> float:
        """Seconds until `cam` may send (0.0: now); reserves nothing, but a camera held back
        only by the shared budget is noted as waiting, so that it gets the next token before
        cameras that went more recently."""
        with self._state() as state:
            now = self.clock.monotonic()
            wait = self._wait(state, cam, interval_s, now)
            if wait > 0 and self._own_wait(state, cam, interval_s, now) <= 0:
                state["cams"].setdefault(cam, {})["waiting"] = now
            return wait

    def reserve(self, cam: str, interval_s: float, in_flight_s: float) -> float:
        """0.0 when `cam`'s request may leave now — it is then counted as sent and in flight
        (for at most `in_flight_s`) until `done(cam)` — else the seconds to wait."""
        with self._state() as state:
            now = self.clock.monotonic()
            wait = self._wait(state, cam, interval_s, now)
            entry = state["cams"].setdefault(cam, {})
            if wait > 0:
                if self._own_wait(state, cam, interval_s, now) <= 0:  # waiting for a token
                    entry["waiting"] = now
                return wait
            rivals = [c for c, e in state["cams"].items()
                      if c != cam and now - e.get("waiting", -math.inf) <= WAITING_FRESH_S
                      and e.get("last_sent", -math.inf) < entry.get("last_sent", -math.inf)]
            if self.per_minute and rivals:  # the camera that waited longest takes the token
                entry["waiting"] = now
                return min(self.spacing_s, 0.25)
            entry.pop("waiting", None)
            entry["last_sent"] = now
            entry["in_flight_until"] = now + in_flight_s
            if self.per_minute:
                state["next_token"] = max(state["next_token"], now) + self.spacing_s
            if self.per_day:
                self._roll_day(state)
                state["today"] += 1
            self.calls += 1
            return 0.0

    def done(self, cam: str) -> None:
        """`cam`'s request has its answer (or gave up)."""
        with self._state() as state:
            state["cams"].get(cam, {}).pop("in_flight_until", None)

    @staticmethod
    def _own_wait(state: dict[str, Any], cam: str, interval_s: float, now: float) -> float:
        """What holds `cam` back on its own: its interval and its request in flight."""
        entry = state["cams"].get(cam, {})
        return max(entry.get("in_flight_until", -math.inf) - now,
                   entry.get("last_sent", -math.inf) + interval_s + SEND_SLACK_S - now)

    def _wait(self, state: dict[str, Any], cam: str, interval_s: float, now: float) -> float:
        entry = state["cams"].get(cam, {})
        waits = [state["paused_until"] - now]
        if entry.get("in_flight_until", -math.inf) > now:
            waits.append(min(0.1, entry["in_flight_until"] - now))
        waits.append(entry.get("last_sent", -math.inf) + interval_s + SEND_SLACK_S - now)
        if self.per_minute:
            waits.append(state["next_token"] - now)
        if self.per_day:
            self._roll_day(state)
            if state["today"] >= self.per_day:
                wall = self.clock.wall()
                waits.append(next_pacific_midnight(wall) - wall)
        return max(0.0, *waits)

    # -- what the service answered ---------------------------------------------------------------
    def on_success(self, sent_at: float) -> bool:
        """A request sent at `sent_at` (monotonic) succeeded. It ends an outage only when it was
        sent after the outage began (an old request answering late says nothing about now).
        True when an outage ended."""
        with self._state() as state:
            since = state["outage_since"]
            if since is None or sent_at < since:
                return False
            state["failures"] = 0
            state["outage_since"] = None
            if state["pause_reason"].startswith("backing off"):
                state["paused_until"] = 0.0
            return True

    def on_failure(self, sent_at: float, reason: str, retry_after_s: float | None = None) -> float:
        """A 5xx, a timeout, a refused connection or a bare 429: every camera backs off (doubling,
        with jitter; never less than `retry_after_s`); returns the wait."""
        with self._state() as state:
            self.failures += 1
            if state["outage_since"] is None:
                state["outage_since"] = sent_at
            state["failures"] += 1
            delay = self.backoff.delay(state["failures"], retry_after=retry_after_s)
            self._pause(state, delay, f"backing off {delay:.1f} s after {reason}")
            return delay

    def on_rate_limited(self, retry_delay_s: float) -> None:
        """A 429 for a per-minute quota: no camera calls before `retry_delay_s` has passed."""
        with self._state() as state:
            self.rate_limited += 1
            self._pause(state, max(0.0, retry_delay_s), f"rate limited (retry in {retry_delay_s:g} s)")

    def on_daily_exhausted(self) -> float:
        """The per-day quota is spent: no calls until midnight Pacific; returns the wait."""
        with self._state() as state:
            self.rate_limited += 1
            wall = self.clock.wall()
            wait = next_pacific_midnight(wall) - wall
            self._roll_day(state)
            state["today"] = max(state["today"], self.per_day or 0)
            self._pause(state, wait, "daily quota exhausted")
            return wait

    def state(self) -> dict[str, Any]:
        """What /status shows of the budget (times as wall-clock epoch seconds)."""
        with self._state() as state:
            now, wall = self.clock.monotonic(), self.clock.wall()
            paused = state["paused_until"] > now
            return {
                "per_minute": self.per_minute, "per_day": self.per_day,
                "spacing_s": round(self.spacing_s, 3), "used_today": state["today"],
                "calls": self.calls, "rate_limited": self.rate_limited, "failures": self.failures,
                "paused_until": wall + state["paused_until"] - now if paused else None,
                "pause_reason": state["pause_reason"] if paused else "",
                "shared_state": str(self.path) if self.path else None,
            }

    def _pause(self, state: dict[str, Any], seconds: float, reason: str) -> None:
        now = self.clock.monotonic()
        if now + seconds > state["paused_until"]:
            state["paused_until"] = now + seconds
            state["paused_until_wall"] = self.clock.wall() + seconds
            state["pause_reason"] = reason

    def _roll_day(self, state: dict[str, Any]) -> None:
        day = pacific_day(self.clock.wall())
        if day != state["day"]:
            state["day"] = day
            state["today"] = 0

    # -- the state, in memory or in the shared file ----------------------------------------------
    def _state(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        return self._store.transaction()

    def _after_reboot(self, old: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
        """The state a previous boot left: its monotonic times mean nothing now, so a pause is
        carried over by its wall-clock end; the day's count is kept."""
        left = old["paused_until_wall"] - self.clock.wall()
        if left > 0:
            fresh["paused_until"] = self.clock.monotonic() + left
            fresh["paused_until_wall"] = old["paused_until_wall"]
            fresh["pause_reason"] = old["pause_reason"]
        fresh["day"], fresh["today"] = old["day"], old["today"]
        return fresh


def demand_warnings(intervals: list[float], per_minute: int, per_day: int) -> list[str]:
    """What the cameras' demand (one request per interval each) does to the budget, as warnings
    that say which intervals would fit; [] when it fits."""
    if not intervals:
        return []
    n = len(intervals)
    want_minute = sum(60.0 / i for i in intervals)
    out = []
    if want_minute > per_minute:
        fit = math.ceil(n * 60.0 / per_minute)
        out.append(
            f"{n} Gemini camera(s) every {', '.join(f'{i:g}' for i in intervals)} s ask for "
            f"{want_minute:.0f} requests a minute but tracker.gemini.requests_per_minute is "
            f"{per_minute}: requests go out one every {60.0 / per_minute:g} s, so each camera is "
            f"detected about every {fit:g} s. Intervals that fit: interval_s >= {fit:g} per camera "
            f"(or raise requests_per_minute if your tier allows it)")
    want_day = sum(86400.0 / i for i in intervals)
    if want_day > per_day:
        fit = math.ceil(n * 86400.0 / per_day)
        hours = per_day / want_day * 24 if want_day else 0
        out.append(
            f"{n} Gemini camera(s) ask for {want_day:.0f} requests a day but "
            f"tracker.gemini.requests_per_day is {per_day}: the day's requests are spent after about "
            f"{hours:.1f} h, then detection pauses until midnight Pacific. Intervals that fit the "
            f"day: interval_s >= {fit:g} per camera (or raise requests_per_day if your tier allows it)")
    return out


__all__ = ["PACIFIC", "SEND_SLACK_S", "BudgetError", "RequestBudget", "demand_warnings",
           "next_pacific_midnight"]
