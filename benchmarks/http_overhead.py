"""What the API-wide rules cost per request, and what a /metrics scrape costs.

    python benchmarks/http_overhead.py [--requests 20000] [--no-write]

In one process, over one FrameCache holding a real 640×360 JPEG from a real publisher on
loopback, the WSGI application is called directly (no sockets, so only Python work is
measured), alternating in rounds:

- `bare`: a Falcon app with only the `/latest/{id}` resource — no middleware;
- `gateway`: the gateway's app — CORS, request counting, query rules, HEAD, trailing slash.

It reports microseconds per `/latest/0` request for both (median of the rounds), and the time
of one `/status` and one `/metrics` answer with three cameras. Written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

import falcon
import numpy as np
import zmq
from falcon.testing import create_environ

from camfabric.gateway import resources as r
from camfabric.gateway.app import create_app
from camfabric.gateway.cache import FrameCache
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Frame, Meta, Publisher, encode_jpeg

try:
    from benchmarks.report import write_section
except ImportError:  # run as a script from benchmarks/
    from report import write_section  # type: ignore[no-redef]

ROUNDS = 7


def call(app: Callable, path: str) -> bytes:
    status: list[str] = []
    body = b"".join(app(create_environ(path), lambda s, h, exc=None: status.append(s)))
    if not status[0].startswith("200"):
        raise SystemExit(f"{path}: {status[0]} {body[:200]!r}")
    return body


def per_request_us(app: Callable, path: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call(app, path)
    return (time.perf_counter() - started) / n * 1e6


def feed(publisher: Publisher, stop: threading.Event) -> None:
    """Three cameras: a heartbeat and a fresh 640×360 JPEG each, twice a second."""
    image = np.random.default_rng(1).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    jpeg = encode_jpeg(image, quality=80)
    registry = {"name": "bench", "role": "overhead", "resolution": [640, 360]}
    seq = 0
    while not stop.wait(0.5 if seq else 0.05):
        seq += 1
        for cam in range(3):
            publisher.publish(Meta(cam=cam, node="bench", registry={**registry, "id": cam},
                                   health={"connected": True, "fps": 15.0, "errors": 0}))
            publisher.publish(Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=640, h=360,
                                    encoding="jpeg", data=jpeg, node="bench", frame_id="f"))


def wait_for_frames(cache: FrameCache) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(c in cache.camera_ids() and cache.latest(c) is not None for c in range(3)):
            return
        time.sleep(0.1)
    raise SystemExit("the cache got no frame in 10 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    context = zmq.Context()
    publisher = Publisher("tcp://127.0.0.1:0", context=context).start()
    cache = FrameCache(publisher.endpoint, context=context).start()
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(publisher, stop), daemon=True)
    feeder.start()
    try:
        wait_for_frames(cache)
        config = GatewayConfig()
        gateway = create_app(cache, config)
        bare = falcon.App()
        bare.add_route("/latest/{cam_id}", r.LatestResource(
            r.Frames(cache, config.snap_timeout_s, config.stale_after_s)))
        n = max(1, args.requests // ROUNDS)
        bare_us, gateway_us = [], []
        for _ in range(ROUNDS):
            bare_us.append(per_request_us(bare, "/latest/0", n))
            gateway_us.append(per_request_us(gateway, "/latest/0", n))
        status_us = statistics.median(per_request_us(gateway, "/status", 200) for _ in range(5))
        metrics_us = statistics.median(per_request_us(gateway, "/metrics", 200) for _ in range(5))
    finally:
        stop.set()
        feeder.join()
        cache.close()
        publisher.stop()
        context.term()
    b, g = statistics.median(bare_us), statistics.median(gateway_us)
    lines = [
        "## HTTP: what the API-wide rules cost (benchmarks/http_overhead.py)",
        "",
        f"WSGI app called in-process, {ROUNDS} alternating rounds of {n} requests each, median:",
        "",
        "| request | µs per request |",
        "|---|---|",
        f"| `/latest/0`, bare Falcon app (resource only) | {b:.1f} |",
        f"| `/latest/0`, the gateway's app (CORS, request counting, query rules) | {g:.1f} |",
        f"| difference | {g - b:+.1f} ({(g / b - 1) * 100:+.0f} %) |",
        f"| `/status`, 3 cameras | {status_us:.1f} |",
        f"| `/metrics`, 3 cameras | {metrics_us:.1f} |",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end of the run (the machine was shared "
        "with other work: read the difference, not the absolute figures).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("http-overhead", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
