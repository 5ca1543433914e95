"""Synchronised frame sets: what matching costs, and what a consumer gets from two nodes.

- matching   `FrameSync.find` over three cameras with full histories, time injected: the cost
             of one look for a set (the subscriber looks once per arriving message while a
             consumer waits)
- two nodes  real capture nodes on loopback (cameras 0 and 1 on one, 2 on the other, 30 fps,
             320x240 JPEG), `synced_sets` for a fixed time: sets per second, their spread, and
             each frame's true age when handed over (the nodes run on this host, so their wall
             clock gives it) — for the pair 0+2 at the default tolerance and for the triple at
             one frame interval

Measured, not asserted; the machine may be shared.

    .venv/bin/python benchmarks/sync.py [--seconds 10] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_cpu import machine  # noqa: E402
from report import write_section  # noqa: E402

from camfabric.capture_node.config import NodeConfig, demo_cameras  # noqa: E402
from camfabric.capture_node.node import CaptureNode  # noqa: E402
from camfabric.protocol import Frame, Subscriber  # noqa: E402
from camfabric.protocol.sync import FrameSync  # noqa: E402

MS = 1_000_000
FPS = 30


def matching_cost(calls: int = 20_000) -> float:
    """Microseconds per `find` over three cameras with full histories."""
    now = [10**12]
    sync = FrameSync(threading.Condition(), lambda: now[0])
    for i in range(64):
        for cam, phase in ((0, 0), (1, 7), (2, 13)):
            t = 10**12 + i * (10**9 // FPS) + phase * MS
            sync.add(Frame(cam=cam, seq=i, t_capture_ns=t, w=4, h=4, encoding="jpeg",
                           data=b"\xff\xd8\xff\xd9", node=f"n{cam % 2}", t_publish_ns=t + MS,
                           t_receive_ns=t + 2 * MS))
    now[0] = 10**12 + 64 * (10**9 // FPS)
    with sync.cond:
        start = time.perf_counter()
        for _ in range(calls):
            sync.find([0, 1, 2], "jpeg", now[0])
        return (time.perf_counter() - start) / calls * 1e6


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def consume(cams: list[int], tolerance_ms: float | None, seconds: float) -> dict[str, float]:
    with ExitStack() as stack:
        nodes = []
        for name, ids in (("host-a", [0, 1]), ("host-b", [2])):
            cameras = tuple(c for c in demo_cameras(320, 240, FPS) if c.id in ids)
            config = NodeConfig(name=name, publish="tcp://127.0.0.1:0", cameras=cameras)
            nodes.append(stack.enter_context(CaptureNode(config)))
        sub = stack.enter_context(Subscriber([n.endpoint for n in nodes], cameras=cams))
        sub.synced(cams, tolerance_ms=tolerance_ms, timeout=5.0)  # warmed up
        spreads, ages, tolerances, count = [], [], [], 0
        start = time.monotonic()
        for frames in sub.synced_sets(cams, tolerance_ms=tolerance_ms, timeout=5.0):
            wall = time.time_ns()
            count += 1
            spreads.append(frames.spread_ns / MS)
            tolerances.append(frames.tolerance_ns / MS)
            ages.extend((wall - f.t_capture_ns) / MS for f in frames.values())
            if time.monotonic() - start >= seconds:
                break
        elapsed = time.monotonic() - start
    return {"sets_per_s": count / elapsed, "spread_p50": statistics.median(spreads),
            "spread_p99": pct(spreads, 0.99), "age_p50": statistics.median(ages),
            "age_p99": pct(ages, 0.99), "tolerance": statistics.median(tolerances)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cost = matching_cost()
    print(f"matching: {cost:.1f} us per find", file=sys.stderr)
    rows = []
    for label, cams, tol in (("cameras 0 + 2, default tolerance", [0, 2], None),
                             ("cameras 0 + 1 + 2, one interval", [0, 1, 2], 1000 / FPS)):
        r = consume(cams, tol, args.seconds)
        print(f"{label}: {r}", file=sys.stderr)
        rows.append(f"| {label} | {r['tolerance']:.1f} | {r['sets_per_s']:.1f} | "
                    f"{r['spread_p50']:.1f} / {r['spread_p99']:.1f} | "
                    f"{r['age_p50']:.1f} / {r['age_p99']:.1f} |")
    if args.no_write:
        return 0
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(rows)
    text = f"""## Synchronised frame sets (`benchmarks/sync.py`)

Run {when}, {args.seconds:g} s per row. Two capture nodes on loopback (cameras 0 and 1 on one,
2 on the other), synthetic 320x240 at {FPS} fps, free-running (no shared trigger); one
subscriber taking every new set with `synced_sets`.

| set | tolerance ms | sets/s | spread p50 / p99 ms | true frame age at hand-over p50 / p99 ms |
|---|---|---|---|---|
{table}

Looking for a set (`FrameSync.find`, three cameras, full histories of 8): {cost:.0f} µs; the
subscriber looks once per arriving message while a consumer waits.

Machine (shared with other work while measuring; load average {os.getloadavg()[0]:.1f} at the end):

```
{machine()}
```
"""
    write_section("sync", text)
    print("written to docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
