"""What a revoked CURVE client must see, whichever server (a node, a proxy) it was cut from."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from camfabric import protocol
from camfabric.sim.faults import wait_until


def revoke_and_watch(authorized: Path, revoked: protocol.Subscriber, kept: protocol.Subscriber,
                     caplog: pytest.LogCaptureFixture) -> None:
    """Remove the first client's key (`alice.key`) while both receive camera 0: within 5 s the
    server says so and ends every connection; from then on the revoked client receives nothing
    (for two seconds of its reconnect attempts), and the other, reconnected, gets fresh frames."""
    revoked.latest(0, timeout=10)
    kept.latest(0, timeout=10)
    with caplog.at_level(logging.INFO):
        (authorized / "alice.key").unlink()
        removed = time.monotonic_ns()
        wait_until(lambda: any("key(s) removed" in r.getMessage() for r in caplog.records),
                   timeout=5.0, what="the server to notice the removed key")
        cut = time.monotonic_ns()
        assert cut - removed < 5_000_000_000
        time.sleep(0.5)  # frames already in the client's socket when the connection ended
        last = revoked.latest(0, timeout=0)
        time.sleep(2.0)  # the revoked client keeps reconnecting, and is refused each time
        assert revoked.latest(0, timeout=0) is last  # nothing since
        # The server dropped every connection; the kept client reconnected: fresh frames again.
        fresh = kept.latest(0, timeout=3, captured_after_ns=cut)
        assert fresh.t_receive_ns > cut
