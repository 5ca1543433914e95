"""The request budget every Gemini call of the process draws on.

Gemini's quotas are per project, not per camera or per process, so one `RequestBudget` is
shared by all cameras: a per-minute window, a per-day count that resets at midnight Pacific
time (when Google resets daily quotas), and pauses that hold for *every* camera:

- a 429 RESOURCE_EXHAUSTED pauses until its `retryDelay` has passed (google.rpc.RetryInfo),
  so one camera's 429 is not followed by the other cameras' calls: no cascade;
- a per-day quota violation pauses until the next Pacific midnight, logged once;
- a 5xx or a timeout backs off exponentially (`backoff_s`, doubling to `max_backoff_s`),
  reset by the next success.

Time is passed in (`now`, epoch seconds), so tests need no sleeping.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")


def next_pacific_midnight(now: float) -> float:
    """Epoch seconds of the next midnight in America/Los_Angeles after `now`."""
    local = dt.datetime.fromtimestamp(now, PACIFIC)
    tomorrow = (local + dt.timedelta(days=1)).date()
    return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=PACIFIC).timestamp()


def _pacific_day(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, PACIFIC).date()


class RequestBudget:
    """Calls per minute and per day for the whole process, plus shared pauses."""

    def __init__(self, per_minute: int, per_day: int, *, backoff_s: float = 5.0,
                 max_backoff_s: float = 300.0, log: logging.Logger | None = None) -> None:
        self.per_minute = per_minute
        self.per_day = per_day
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self._day: dt.date | None = None
        self._today = 0
        self._paused_until = 0.0
        self._pause_reason = ""
        self._backoff = 0.0
        self._daily_logged = False
        self.calls = 0
        self.rate_limited = 0
        self.server_errors = 0

    def reserve(self, now: float) -> float:
        """Take one call from the budget: 0.0 when the call may go now (and it is counted),
        else the epoch time before which no call may go."""
        with self._lock:
            self._roll_day(now)
            if now < self._paused_until:
                return self._paused_until
            while self._recent and self._recent[0] <= now - 60.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_minute:
                return self._recent[0] + 60.0
            if self._today >= self.per_day:
                return next_pacific_midnight(now)
            self._recent.append(now)
            self._today += 1
            self.calls += 1
            return 0.0

    def on_rate_limited(self, now: float, retry_delay_s: float) -> None:
        """A 429 for the per-minute quota: nobody calls before `retry_delay_s` has passed."""
        with self._lock:
            self.rate_limited += 1
            self._pause(now + max(retry_delay_s, 0.0), f"rate limited (retry in {retry_delay_s:g} s)")

    def on_daily_exhausted(self, now: float) -> None:
        """The per-day quota is spent: no calls until the quota resets at midnight Pacific."""
        with self._lock:
            self.rate_limited += 1
            until = next_pacific_midnight(now)
            self._today = self.per_day
            self._pause(until, "daily quota exhausted")
            if not self._daily_logged:
                self._daily_logged = True
                reset = dt.datetime.fromtimestamp(until, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                self.log.warning("Gemini daily quota exhausted: no more calls until it resets at "
                                 "midnight Pacific time (%s)", reset)

    def on_failure(self, now: float) -> float:
        """A 5xx, a timeout or a refused connection: back off (doubling); returns the wait."""
        with self._lock:
            self.server_errors += 1
            self._backoff = min(self.max_backoff_s, self._backoff * 2 if self._backoff else self.backoff_s)
            self._pause(now + self._backoff, f"backing off {self._backoff:g} s after a failure")
            return self._backoff

    def on_success(self, now: float) -> None:
        """A call that worked ends any backoff."""
        with self._lock:
            self._backoff = 0.0
            self._daily_logged = False

    def state(self, now: float) -> dict[str, object]:
        """What /status shows of the budget."""
        with self._lock:
            self._roll_day(now)
            recent = sum(1 for t in self._recent if t > now - 60.0)
            return {
                "per_minute": self.per_minute, "per_day": self.per_day,
                "used_last_minute": recent, "used_today": self._today, "calls": self.calls,
                "rate_limited": self.rate_limited, "server_errors": self.server_errors,
                "paused_until": self._paused_until if self._paused_until > now else None,
                "pause_reason": self._pause_reason if self._paused_until > now else "",
            }

    def _pause(self, until: float, reason: str) -> None:
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = reason

    def _roll_day(self, now: float) -> None:
        day = _pacific_day(now)
        if day != self._day:
            self._day = day
            self._today = 0
