"""What a revoked CURVE client must see, whichever server (a node, a proxy) it was cut from."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from camfabric import protocol


def revoke_and_watch(authorized: Path, revoked: protocol.Subscriber, kept: protocol.Subscriber,
                     caplog: pytest.LogCaptureFixture) -> None:
    """Remove the first client's key (`alice.key`) while both receive camera 0: it receives
    nothing from 5 s on; the other, reconnected by the server, gets fresh frames again."""
    revoked.latest(0, timeout=10)
    kept.latest(0, timeout=10)
    with caplog.at_level(logging.INFO):
        (authorized / "alice.key").unlink()
        removed = time.monotonic_ns()
        time.sleep(7)
        last = revoked.latest(0, timeout=0)
        time.sleep(1)
        assert revoked.latest(0, timeout=0) is last  # nothing since
        assert last.t_receive_ns < removed + 5_000_000_000
        # The server dropped every connection; the kept client reconnected: fresh frames again.
        fresh = kept.latest(0, timeout=3, captured_after_ns=removed + 6_000_000_000)
        assert fresh.t_receive_ns > removed
