"""The send-time gate and its budget: intervals, the token bucket, the Pacific day, pauses,
backoff, and the state shared through a file — all on an injected clock, stepped ±1 h."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
from pathlib import Path

import pytest

from camfabric.runtime.backoff import Backoff
from camfabric.runtime.clock import ManualClock
from camfabric.subscribers.tracker.budget import (
    PACIFIC,
    SEND_SLACK_S,
    BudgetError,
    RequestBudget,
    demand_warnings,
    next_pacific_midnight,
)

NOON = dt.datetime(2026, 11, 21, 12, 0, tzinfo=PACIFIC).timestamp()


def _budget(clock, per_minute=10, per_day=10_000, path=None, **kwargs) -> RequestBudget:
    backoff = Backoff(base_s=2.0, cap_s=60.0, jitter=0.0)
    return RequestBudget(per_minute=per_minute, per_day=per_day, path=path, clock=clock,
                         backoff=backoff, **kwargs).open()


def _drive(budget, clock, cams, seconds, interval=2.0, step=0.05, hook=None):
    """Every camera asks whenever it may; a request is answered at once. Returns the send
    times (monotonic) per camera."""
    sent = {cam: [] for cam in cams}
    for k in range(round(seconds / step)):
        if hook:
            hook(k * step)
        for cam in cams:
            if budget.reserve(cam, interval, 30.0) == 0.0:
                sent[cam].append(clock.monotonic())
                budget.done(cam)
        clock.advance(step)
    return sent


def test_requests_are_spread_evenly_over_the_minute_and_shared_fairly():
    clock = ManualClock(wall=NOON)
    budget = _budget(clock, per_minute=10)
    sent = _drive(budget, clock, ["0", "1", "2"], seconds=180)
    every = sorted(t for times in sent.values() for t in times)
    gaps = [b - a for a, b in zip(every, every[1:], strict=False)]
    # 10 a minute less the send margin, whatever 3 cameras at 2 s would want
    assert len(every) == pytest.approx(180 / (6.0 + SEND_SLACK_S), abs=1)
    assert min(gaps) >= 6.0 and max(gaps) <= 6.0 + SEND_SLACK_S + 0.06  # evenly spaced, no burst
    counts = sorted(len(t) for t in sent.values())
    assert counts[-1] - counts[0] <= 1  # the cameras take turns


def test_a_camera_goes_at_most_once_per_interval_and_never_while_in_flight():
    clock = ManualClock()
    budget = _budget(clock, per_minute=None, per_day=None)
    assert budget.reserve("0", 2.0, 30.0) == 0.0
    clock.advance(5.0)
    assert budget.reserve("0", 2.0, 30.0) > 0  # interval over, but the first is still in flight
    budget.done("0")
    assert budget.reserve("0", 2.0, 30.0) == 0.0
    budget.done("0")
    clock.advance(1.9)
    assert budget.reserve("0", 2.0, 30.0) == pytest.approx(0.1 + SEND_SLACK_S)
    assert budget.reserve("1", 2.0, 30.0) == 0.0  # another camera has its own interval


def test_wall_clock_stepped_an_hour_either_way_neither_bursts_nor_stalls():
    clock = ManualClock(wall=NOON)
    budget = _budget(clock, per_minute=10)
    steps = {60.0: 3600.0, 150.0: -3600.0, 240.0: -3600.0}

    def ntp(t):
        if round(t, 2) in steps:
            clock.step_wall(steps[round(t, 2)])

    sent = _drive(budget, clock, ["0", "1", "2"], seconds=300, hook=ntp)
    every = sorted(t for times in sent.values() for t in times)
    gaps = [b - a for a, b in zip(every, every[1:], strict=False)]
    assert len(every) == pytest.approx(300 / (6.0 + SEND_SLACK_S), abs=1)
    assert min(gaps) >= 6.0 and max(gaps) <= 6.0 + SEND_SLACK_S + 0.06


def test_a_429_pauses_every_camera_for_its_retry_delay_on_the_monotonic_clock():
    for step in (3600.0, -3600.0):
        clock = ManualClock(wall=NOON)
        budget = _budget(clock, per_minute=1000)
        assert budget.reserve("0", 2.0, 30.0) == 0.0
        budget.done("0")
        budget.on_rate_limited(17.0)
        clock.step_wall(step)  # NTP steps the clock during the pause
        clock.advance(16.9)
        assert budget.reserve("1", 2.0, 30.0) == pytest.approx(0.1)
        assert budget.reserve("0", 2.0, 30.0) == pytest.approx(0.1)
        clock.advance(0.1)
        assert budget.reserve("1", 2.0, 30.0) == 0.0


def test_the_day_count_resets_at_pacific_midnight():
    clock = ManualClock(wall=NOON)
    budget = _budget(clock, per_minute=1000, per_day=2)
    for cam in ("0", "1"):
        assert budget.reserve(cam, 2.0, 30.0) == 0.0
        budget.done(cam)
        clock.advance(1.0)
    midnight = dt.datetime(2026, 11, 22, 0, 0, tzinfo=PACIFIC).timestamp()
    assert budget.reserve("2", 2.0, 30.0) == pytest.approx(midnight - NOON - 2)
    clock.advance(midnight - NOON - 1)
    assert budget.reserve("2", 2.0, 30.0) == 0.0


def test_next_pacific_midnight_follows_daylight_saving():
    before_switch = dt.datetime(2026, 3, 7, 23, 0, tzinfo=PACIFIC).timestamp()
    utc = dt.datetime.fromtimestamp(next_pacific_midnight(before_switch), dt.timezone.utc)
    assert (utc.hour, utc.day) == (8, 8)  # PST: midnight is 08:00 UTC
    summer = dt.datetime(2026, 7, 1, 12, 0, tzinfo=PACIFIC).timestamp()
    assert dt.datetime.fromtimestamp(next_pacific_midnight(summer), dt.timezone.utc).hour == 7  # PDT


def test_backoff_doubles_and_only_a_request_sent_after_the_outage_began_ends_it():
    clock = ManualClock()
    budget = _budget(clock, per_minute=1000)
    old_request = clock.monotonic()  # sent before the outage, answers late
    clock.advance(1.0)
    outage = clock.monotonic()
    assert budget.on_failure(outage, "HTTP 503") == 2.0
    assert budget.on_failure(outage + 2, "HTTP 503") == 4.0
    assert not budget.on_success(old_request)  # says nothing about now
    assert budget.reserve("0", 2.0, 30.0) == pytest.approx(4.0)
    assert budget.on_failure(outage + 6, "timeout") == 8.0  # still doubling
    assert budget.on_success(outage + 14)
    assert budget.reserve("0", 2.0, 30.0) == 0.0  # the pause ended with the outage
    assert budget.on_failure(outage + 20, "HTTP 500") == 2.0  # a new outage starts over


def test_backoff_honours_retry_after_as_a_floor_and_jitters():
    clock = ManualClock()
    budget = RequestBudget(per_minute=10, clock=clock,
                           backoff=Backoff(base_s=2.0, cap_s=60.0, rng=random.Random(1)))
    delays = [budget.on_failure(clock.monotonic(), "HTTP 503") for _ in range(4)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, (2, 4, 8, 16), strict=True))
    assert budget.on_failure(clock.monotonic(), "HTTP 429", retry_after_s=45.0) >= 45.0


def test_two_budgets_on_one_state_file_share_the_cameras_intervals(tmp_path):
    clock = ManualClock(wall=NOON)
    path = tmp_path / "gemini-abc.json"
    a, b = _budget(clock, path=path, per_minute=100), _budget(clock, path=path, per_minute=100)
    sent = []
    for _ in range(400):  # two trackers, each asking for camera 0 every 50 ms, in the same instant
        # each asks first at every other turn, the other right behind it
        for budget in ((a, b) if len(sent) % 2 == 0 else (b, a)):
            if budget.reserve("0", 2.0, 30.0) == 0.0:
                sent.append(clock.monotonic())
                budget.done("0")
        clock.advance(0.05)
    gaps = [y - x for x, y in zip(sent, sent[1:], strict=False)]
    assert len(sent) == pytest.approx(20 / (2.0 + SEND_SLACK_S), abs=1) and min(gaps) >= 2.0 + SEND_SLACK_S
    assert a.calls + b.calls == len(sent) and abs(a.calls - b.calls) <= 1


def test_a_restart_keeps_a_daily_pause_and_the_last_send(tmp_path):
    clock = ManualClock(wall=NOON)
    path = tmp_path / "gemini-abc.json"
    first = _budget(clock, path=path)
    assert first.reserve("0", 2.0, 30.0) == 0.0
    first.done("0")
    first.on_daily_exhausted()
    first.close()
    clock.advance(3600)
    again = _budget(clock, path=path)  # the tracker restarted an hour later
    midnight = dt.datetime(2026, 11, 22, 0, 0, tzinfo=PACIFIC).timestamp()
    assert again.reserve("1", 2.0, 30.0) == pytest.approx(midnight - NOON - 3600)
    assert again.state()["pause_reason"] == "daily quota exhausted"


def test_after_a_reboot_a_pause_is_carried_by_its_wall_clock_end(tmp_path):
    clock = ManualClock(wall=NOON)
    path = tmp_path / "gemini-abc.json"
    first = _budget(clock, path=path)
    first.on_rate_limited(600.0)
    first.close()
    state = json.loads(path.read_text())
    state["boot"] = "a-previous-boot"  # as the tracker of the previous boot left it
    state["paused_until"] = 99_999_999.0  # that boot's monotonic clock, meaningless now
    path.write_text(json.dumps(state))
    clock.advance(100)
    again = _budget(clock, path=path)
    assert again.reserve("0", 2.0, 30.0) == pytest.approx(500.0)


def test_a_second_tracker_with_another_budget_for_the_key_is_refused(tmp_path):
    clock = ManualClock()
    path = tmp_path / "gemini-abc.json"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    state = {"boot": boot, "cams": {}, "next_token": 0.0, "day": "", "today": 0, "paused_until": 0.0,
             "paused_until_wall": 0.0, "pause_reason": "", "failures": 0, "outage_since": None,
             "owners": {str(os.getppid()): {"per_minute": 10, "per_day": 20}}}
    path.write_text(json.dumps(state))  # a live tracker (our parent process) owns the key
    with pytest.raises(BudgetError) as err:
        _budget(clock, path=path, per_minute=60, per_day=20)
    message = str(err.value)
    assert f"pid {os.getppid()}" in message and "requests_per_minute=10" in message
    assert _budget(clock, path=path, per_minute=10, per_day=20).calls == 0  # the same budget shares


def test_a_dead_owner_or_a_corrupt_file_does_not_block_a_start(tmp_path, caplog):
    clock = ManualClock()
    path = tmp_path / "gemini-abc.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        budget = _budget(clock, path=path)
    assert "unreadable" in caplog.text
    assert budget.reserve("0", 2.0, 30.0) == 0.0


def test_an_unusable_state_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BudgetError) as err:
        _budget(ManualClock(), path=blocker / "gemini-abc.json")
    assert "tracker.gemini.state_dir" in str(err.value)


def test_demand_beyond_the_budget_is_warned_with_intervals_that_fit():
    assert demand_warnings([30.0], per_minute=10, per_day=100_000) == []
    minute, day = demand_warnings([2.0, 2.0, 2.0], per_minute=10, per_day=20)
    assert "90 requests a minute" in minute and "interval_s >= 18" in minute
    assert "requests_per_day is 20" in day and "interval_s >= 12960" in day
