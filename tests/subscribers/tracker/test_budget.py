"""The process-wide Gemini request budget: windows, shared pauses, the Pacific-day reset."""

from __future__ import annotations

import datetime as dt
import logging

from camfabric.subscribers.tracker.budget import PACIFIC, RequestBudget, next_pacific_midnight


def test_per_minute_window_slides():
    budget = RequestBudget(per_minute=3, per_day=100)
    t = 1_790_000_000.0
    assert [budget.reserve(t + i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert budget.reserve(t + 10) == t + 60  # the oldest call leaves the window then
    assert budget.reserve(t + 60) == 0.0
    assert budget.calls == 4


def test_per_day_limit_resets_at_pacific_midnight():
    budget = RequestBudget(per_minute=100, per_day=2)
    noon = dt.datetime(2026, 11, 21, 12, 0, tzinfo=PACIFIC).timestamp()
    assert budget.reserve(noon) == 0.0
    assert budget.reserve(noon + 1) == 0.0
    midnight = dt.datetime(2026, 11, 22, 0, 0, tzinfo=PACIFIC).timestamp()
    assert budget.reserve(noon + 2) == midnight
    assert budget.reserve(midnight + 1) == 0.0


def test_next_pacific_midnight_follows_daylight_saving():
    before_switch = dt.datetime(2026, 3, 7, 23, 0, tzinfo=PACIFIC).timestamp()
    assert dt.datetime.fromtimestamp(next_pacific_midnight(before_switch), PACIFIC).hour == 0
    utc = dt.datetime.fromtimestamp(next_pacific_midnight(before_switch), dt.UTC)
    assert (utc.hour, utc.day) == (8, 8)  # PST: midnight is 08:00 UTC
    summer = dt.datetime(2026, 7, 1, 12, 0, tzinfo=PACIFIC).timestamp()
    assert dt.datetime.fromtimestamp(next_pacific_midnight(summer), dt.UTC).hour == 7  # PDT


def test_a_429_pauses_every_caller_for_its_retry_delay():
    budget = RequestBudget(per_minute=100, per_day=1000)
    t = 1_790_000_000.0
    assert budget.reserve(t) == 0.0
    budget.on_rate_limited(t, 17.0)
    assert budget.reserve(t + 1) == t + 17
    assert budget.reserve(t + 16.9) == t + 17
    assert budget.reserve(t + 17) == 0.0


def test_failures_back_off_doubling_and_a_success_resets():
    budget = RequestBudget(per_minute=100, per_day=1000, backoff_s=2.0, max_backoff_s=10.0)
    t = 1_790_000_000.0
    assert [budget.on_failure(t) for _ in range(4)] == [2.0, 4.0, 8.0, 10.0]
    budget.on_success(t)
    assert budget.on_failure(t) == 2.0


def test_daily_exhaustion_is_said_once(caplog):
    budget = RequestBudget(per_minute=100, per_day=1000)
    t = dt.datetime(2026, 11, 21, 12, 0, tzinfo=PACIFIC).timestamp()
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            budget.on_daily_exhausted(t + i)
    said = [r for r in caplog.records if "daily quota" in r.getMessage()]
    assert len(said) == 1
    assert "midnight Pacific" in said[0].getMessage()
    assert budget.reserve(t + 3600) == dt.datetime(2026, 11, 22, 0, 0, tzinfo=PACIFIC).timestamp()
