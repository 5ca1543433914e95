"""Serving details that a user notices only under load."""

from __future__ import annotations

import logging

from camfabric.gateway.server import Throttle


def test_a_busy_server_warns_once_per_interval_not_once_per_request():
    now = [0.0]
    throttle = Throttle(interval_s=60, clock=lambda: now[0])

    def record() -> logging.LogRecord:
        return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1,
                                 "Task queue depth is %d", (3,), None)

    assert throttle.filter(record())
    assert [throttle.filter(record()) for _ in range(100)] == [False] * 100
    now[0] = 61.0
    passed = record()
    assert throttle.filter(passed)
    assert "100 more" in passed.getMessage()
