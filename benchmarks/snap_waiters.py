"""`/latest` answer times while 24 clients loop on `/snap` of a stalled camera.

    .venv/bin/python benchmarks/snap_waiters.py [--rounds 3] [--requests 500] [--loops 24] [--no-write]

A camera that stalls but stays "connected" (its node still sends heartbeats, no frame comes)
makes every `/snap` wait for a frame that never arrives. The gateway (`camfabric gateway`, its
default workers, as users run it) bounds those waits: a few requests wait, the rest are turned
away at once with 503 + Retry-After, so `/latest` keeps its serving threads. Each round first
times `/latest/0` with no waiter (the reference), then with `--loops` threads asking `/snap/0`
again at once after waiting in vain, and as Retry-After says after being turned away; the
node here is a real Publisher in this process sending what a capture node sends. Measured, not
asserted; written to docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests
from e2e import REPO, add_report_options, machine, pct, publish, stolen_share  # noqa: I001

from camfabric.protocol import Frame, Meta, Publisher

PACE_S = 0.01  # between two /latest requests: a dashboard polling hard


def heartbeat(publisher: Publisher, stop: threading.Event) -> None:
    """The node's heartbeat every 0.3 s: the camera stays connected, it only sends no frame."""
    while not stop.wait(0.3):
        publisher.publish(Meta(cam=0, node="stalled", registry={"name": "stalled"},
                               health={"connected": True, "fps": 15.0}))


def latest_times(url: str, n: int) -> list[float]:
    session = requests.Session()
    times = []
    for _ in range(n):
        started = time.monotonic()
        answer = session.get(url + "latest/0", timeout=10)
        times.append(time.monotonic() - started)
        if answer.status_code != 200:
            raise SystemExit(f"/latest/0 answered {answer.status_code}: {answer.text[:200]}")
        time.sleep(PACE_S)
    return times


def snap_loop(url: str, stop: threading.Event, counts: dict[str, int], lock: threading.Lock) -> None:
    session = requests.Session()
    while not stop.is_set():
        answer = session.get(url + "snap/0", timeout=30)
        turned_away = answer.status_code == 503 and "Retry-After" in answer.headers and \
            ("are waiting" in answer.text or "requests waiting" in answer.text)
        with lock:
            key = "turned away" if turned_away else f"waited, {answer.status_code}"
            counts[key] = counts.get(key, 0) + 1
        if turned_away:
            stop.wait(float(answer.headers["Retry-After"]))


def started_gateway(endpoint: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    config = tmp / "gateway.toml"
    config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{endpoint}"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "camfabric.cli", "gateway", "--config", str(config),
                             "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "camfabric gateway:" not in line:
        proc.kill()
        raise SystemExit(f"the gateway did not start: {line!r}")
    return proc, line.split("camfabric gateway:", 1)[1].split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500, help="/latest requests timed per round and case")
    parser.add_argument("--loops", type=int, default=24, help="/snap loops on the stalled camera")
    add_report_options(parser)
    args = parser.parse_args()
    steal_start = stolen_share()
    jpeg = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
    stop = threading.Event()
    rows: list[tuple[int, list[float], list[float], dict[str, int]]] = []
    publisher = Publisher("tcp://127.0.0.1:0").start()
    with tempfile.TemporaryDirectory() as tmpdir:
        beating = threading.Thread(target=heartbeat, args=(publisher, stop), daemon=True)
        beating.start()
        gateway, url = started_gateway(publisher.endpoint, Path(tmpdir))
        try:
            # One frame, then the camera stalls: no frame ever again.
            deadline = time.monotonic() + 20
            seq = 0
            while requests.get(url + "latest/0", timeout=5).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway never served camera 0's frame")
                publisher.publish(Frame(cam=0, seq=seq, t_capture_ns=time.time_ns(), w=640, h=480,
                                        encoding="jpeg", data=jpeg, node="stalled", frame_id="f"))
                seq += 1
                time.sleep(0.1)
            for i in range(args.rounds):
                print(f"round {i + 1}/{args.rounds} …", file=sys.stderr)
                quiet = latest_times(url, args.requests)
                counts: dict[str, int] = {}
                lock = threading.Lock()
                looping = threading.Event()
                loops = [threading.Thread(target=snap_loop, args=(url, looping, counts, lock), daemon=True)
                         for _ in range(args.loops)]
                for loop in loops:
                    loop.start()
                time.sleep(0.5)  # every loop has asked by now
                waiting = latest_times(url, args.requests)
                looping.set()
                for loop in loops:
                    loop.join(10)
                rows.append((i + 1, quiet, waiting, counts))
        finally:
            stop.set()
            gateway.terminate()
            gateway.wait(10)
            publisher.stop()
    steal_end = stolen_share()
    stolen = (steal_end[0] - steal_start[0]) / max(1.0, steal_end[1] - steal_start[1])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def ms(values: list[float], q: float) -> str:
        return f"{pct(values, q) * 1000:.1f}"

    table = "\n".join(
        f"| {n} | {ms(quiet, 50)} / {ms(quiet, 99)} / {max(quiet) * 1000:.1f} "
        f"| {ms(waiting, 50)} / {ms(waiting, 99)} / {max(waiting) * 1000:.1f} "
        f"| {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |"
        for n, quiet, waiting, counts in rows)
    p99s = [pct(waiting, 99) * 1000 for _, _, waiting, _ in rows]
    report = (
        f"    python3 benchmarks/snap_waiters.py --rounds {args.rounds} --requests {args.requests} "
        f"--loops {args.loops}\n\n"
        f"Run {now} on: {machine()}. `camfabric gateway` with its default workers; camera 0 sent "
        f"one 640x480 frame and then only heartbeats (stalled, still connected). Per round: "
        f"{args.requests} `/latest/0` requests {PACE_S * 1000:.0f} ms apart with no waiter, then "
        f"{args.requests} while {args.loops} threads loop on `/snap/0`. The hypervisor took "
        f"{stolen:.0%} of the CPU time (steal).\n\n"
        f"| round | `/latest` p50 / p99 / max ms, no waiter | `/latest` p50 / p99 / max ms, "
        f"{args.loops} `/snap` loops | `/snap` answers |\n|---|---|---|---|\n{table}\n\n"
        f"`/latest` p99 with {args.loops} `/snap` loops, per round: "
        f"{', '.join(f'{p:.1f}' for p in p99s)} ms; worst **{max(p99s):.1f} ms** (aim: under 50 ms)."
    )
    publish(args, report, "snap-waiters", "`/latest` beside `/snap` waiters on a stalled camera "
                                           "(`benchmarks/snap_waiters.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
