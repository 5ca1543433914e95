"""Reconnect after a silent partition, with and without the connect timeout, side by side.

A node runs in a network namespace (camfabric/sim/netns.py); a gateway and a robot's
Subscriber run here. The host then loses its route back to us for `--partition-s` seconds
while both ends of the link stay up (SYNs go out and are never answered), and comes back —
with its own MAC address, or with a new one. Measured: seconds from the path's return to the
first frame captured after it, at the Subscriber and at the gateway. "without" is the fabric
as it was: no ZMQ_CONNECT_TIMEOUT (a connect attempt waits on TCP's SYN retransmits); "with"
is `protocol/link.py` as shipped (1 s connect timeout, reconnect within 1 s).

Needs root (network namespaces); measured, not asserted.

    .venv/bin/python benchmarks/reconnect.py [--partition-s 60] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_cpu import machine  # noqa: E402
from report import write_section  # noqa: E402

from camfabric.protocol import link  # noqa: E402
from camfabric.sim.faults import watched_node  # noqa: E402
from camfabric.sim.netns import NetnsHost, available  # noqa: E402

SHIPPED_CONNECT_TIMEOUT_MS = link.CONNECT_TIMEOUT_MS


def heal_time(partition_s: float, new_mac: bool, connect_timeout_ms: int) -> tuple[float, float]:
    """Seconds from the path's return to a fresh frame: (at the Subscriber, at the gateway)."""
    link.CONNECT_TIMEOUT_MS = connect_timeout_ms  # read by configure_link for each new socket
    context = zmq.Context()
    try:
        with NetnsHost.create() as host, tempfile.TemporaryDirectory() as tmp, \
                watched_node(host, Path(tmp), context) as (_, gateway, robot):
            host.silence()
            time.sleep(partition_s)
            host.unsilence(new_mac=new_mac)
            healed, healed_wall_ns = time.monotonic(), time.time_ns()
            at: dict[str, float] = {}
            while len(at) < 2 and time.monotonic() - healed < 120:
                frame = robot.poll(timeout=0.05)
                if frame is not None and frame.t_capture_ns > healed_wall_ns:
                    at.setdefault("robot", time.monotonic() - healed)
                cached = gateway.cache.latest(0, wake_timeout_s=0)
                if cached is not None and cached.t_capture_ns > healed_wall_ns:
                    at.setdefault("gateway", time.monotonic() - healed)
            return at.get("robot", float("inf")), at.get("gateway", float("inf"))
    finally:
        link.CONNECT_TIMEOUT_MS = SHIPPED_CONNECT_TIMEOUT_MS
        context.destroy(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition-s", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    args = parser.parse_args()
    reason = available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    rows = []
    for new_mac in (False, True):
        for label, timeout_ms in (("without", 0), ("with", SHIPPED_CONNECT_TIMEOUT_MS)):
            robot, gateway = heal_time(args.partition_s, new_mac, timeout_ms)
            row = (f"| {'new MAC' if new_mac else 'same MAC'} | {label} connect timeout "
                   f"| {robot:.2f} | {gateway:.2f} |")
            print(row, flush=True)
            rows.append(row)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""## Reconnect after a silent partition (`benchmarks/reconnect.py`)

{stamp}. A node in a network namespace loses its route back to us for {args.partition_s:g} s
while the link stays up (every SYN goes unanswered), then comes back; seconds from then to the
first frame captured after it. "without": no `ZMQ_CONNECT_TIMEOUT`, as before; "with": the
1 s connect timeout and reconnect within 1 s that `protocol/link.py` sets on every socket.
A host that comes back with a new MAC address announces it (a gratuitous ARP, as a booting
host's DHCP client or the kernel's arp_notify sends), so our neighbour entry is right again at
once: what is left is the SYN retransmit timer, which the connect timeout cuts short. (One that
does not announce is reached only when the kernel's neighbour entry expires, up to ~50 s.)

| host comes back with | fabric | robot's Subscriber (s) | gateway (s) |
|---|---|---|---|
{chr(10).join(rows)}

Machine (shared with other work while it ran):

```
{machine()}
```
"""
    print(text)
    if not args.no_write:
        write_section("reconnect", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
