"""The shared runtime: one backoff, one log-once, one clock, one start-thread handshake."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from camfabric.protocol.errors import CamfabricError
from camfabric.runtime.backoff import Backoff
from camfabric.runtime.clock import SYSTEM_CLOCK, ManualClock
from camfabric.runtime.logonce import LogOnce
from camfabric.runtime.threads import start_thread


def test_backoff_doubles_to_its_cap_and_honours_retry_after():
    backoff = Backoff(base_s=1.0, cap_s=8.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.delay(1, retry_after=17.0) == 17.0
    assert backoff.delay(4, retry_after=0.5) == 8.0
    assert backoff.delay(10_000) == 8.0  # no overflow after days of failures
    assert Backoff(base_s=0.0, cap_s=0.0).delay(5) == 0.0  # "retry at once" is a valid setting


def test_backoff_jitter_stays_within_half_and_all_of_the_ceiling():
    backoff = Backoff(base_s=2.0, cap_s=60.0, rng=random.Random(7))
    delays = [backoff.delay(3) for _ in range(200)]
    assert min(delays) >= 4.0 and max(delays) <= 8.0
    assert len(set(delays)) > 100  # spread, not one value


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(base_s=-1.0)
    with pytest.raises(ValueError):
        Backoff(base_s=5.0, cap_s=1.0)


def test_log_once_per_kind_again_after_recovery(caplog):
    failures = LogOnce(logging.getLogger("t.logonce"))
    with caplog.at_level(logging.WARNING, "t.logonce"):
        for i in range(20_000):
            failures.warning("decode", "cannot decode message %d", i)
        failures.warning("timeout", "read timed out")
        assert failures.repeats("decode") == 19_999
        failures.recovered()
        failures.warning("decode", "cannot decode message again")
    assert [r.getMessage() for r in caplog.records] == [
        "cannot decode message 0", "read timed out", "cannot decode message again"]


def test_log_once_forgets_the_oldest_kinds_beyond_its_bound():
    failures = LogOnce(logging.getLogger("t.bound"), max_kinds=4)
    for i in range(1000):
        failures.warning(f"kind{i}", "x")
    assert len(failures._seen) == 4


def test_manual_clock_steps_the_wall_clock_alone():
    clock = ManualClock()
    mono, wall = clock.monotonic(), clock.wall()
    clock.step_wall(-3600)
    assert clock.monotonic() == mono and clock.wall() == pytest.approx(wall - 3600)
    clock.advance(2.5)
    assert clock.monotonic() == mono + 2.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert SYSTEM_CLOCK.monotonic() > 0 and SYSTEM_CLOCK.wall_ns() > 1_700_000_000 * 10**9


def test_start_thread_waits_for_the_handshake_and_reraises_its_failure():
    started = threading.Event()

    def good(ready):
        ready.set()
        started.set()

    start_thread(good, name="t-good").join(2)
    assert started.is_set()

    def refuses(ready):
        ready.fail(OSError("address in use"))

    with pytest.raises(OSError, match="address in use"):
        start_thread(refuses, name="t-refuses")

    def dies(ready):
        raise RuntimeError("boom before ready")

    with pytest.raises(RuntimeError, match="boom"):
        start_thread(dies, name="t-dies")

    def silent(ready):
        threading.Event().wait(0.5)

    with pytest.raises(CamfabricError, match="did not start"):
        start_thread(silent, name="t-silent", timeout=0.1)


def test_the_fabrics_owner_threads_report_a_failed_start_and_leave_no_thread(zmq_context):
    from camfabric.protocol import Publisher
    from camfabric.proxy import FabricProxy, ProxyConfig

    def owner_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t.name in ("camfabric-publisher", "camfabric-proxy") and t.is_alive()]

    with Publisher("tcp://127.0.0.1:0", context=zmq_context) as taken:
        before = owner_threads()
        attempts = [Publisher(taken.endpoint, context=zmq_context).start,
                    FabricProxy(ProxyConfig(upstream=[taken.endpoint], publish=taken.endpoint),
                                context=zmq_context).start]
        for attempt in attempts:
            with pytest.raises(CamfabricError, match="in use") as info:
                attempt()
            assert info.value.__cause__ is not None  # the library's error, kept as the cause
        assert owner_threads() == before


def test_the_runtime_imports_before_the_protocol_that_uses_it():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import camfabric.runtime.threads, camfabric.proxy"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
