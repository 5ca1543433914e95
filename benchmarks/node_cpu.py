"""Capture node CPU per frame: MJPEG passthrough vs the same stream with a raw subscriber vs a
raw source that must be encoded — side by side in one run.

Every scenario runs a real CaptureNode with one 1280x720, 30 fps camera and a subscriber in a
child process (so its CPU is not counted):

- passthrough   an MJPEG stream over TCP (the rpicam source reading a sender process, as from
                `rpicam-vid --listen`), subscriber wants `jpeg` only: the node cuts and forwards
- + raw sub     the same stream, subscriber wants `jpeg` and `bgr8`: the node also decodes
- raw, encode   the same pictures as uncompressed PPM files (file source), subscriber wants
                `jpeg`: the node encodes every frame

CPU is the node process's `time.process_time()` over the measuring window divided by the frames
it captured in that window. Measured, not asserted; the machine may be shared.

A second part (`--idle`, or `--idle-only` alone) measures what subscriptions on demand save: a
node with three raw (synthetic) 1920x1080 cameras at 30 fps, and in a child process the
consumers of a typical cell, none of them watched by anybody:

- none    no consumer at all: the floor (the cameras' own capture cost);
- before  the consumers as they subscribed up to now: a gateway subscribed to every camera's
          JPEG from the start, an uploader and a tracker pulling JPEG continuously;
- after   an idle gateway (`FrameCache`: JPEG only while HTTP clients want it) and an uploader
          (one frame per camera every 10 s) and a tracker (every 2 s) that subscribe around
          their intervals (`Subscriber(on_demand=True)`: `latest(cam, max_age_s=...)`, then
          `release(cam)`).

    .venv/bin/python benchmarks/node_cpu.py [--seconds 8] [--idle | --idle-only] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from report import write_section  # noqa: E402

from camfabric.capture_node.config import CameraConfig, NodeConfig, demo_cameras  # noqa: E402
from camfabric.capture_node.node import CaptureNode  # noqa: E402
from camfabric.capture_node.sources.synthetic import SyntheticSource  # noqa: E402
from camfabric.protocol.jpeg import encode_jpeg  # noqa: E402

WIDTH, HEIGHT, FPS, FRAMES = 1280, 720, 30.0, 30

SUBSCRIBER = """
import sys, time
from camfabric.protocol import Subscriber
endpoint, encodings, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
with Subscriber(endpoint, cameras=[0], encoding=encodings) as sub:
    counts = dict.fromkeys(encodings, 0)
    sub.add_listener(lambda m: counts.__setitem__(m.encoding, counts[m.encoding] + 1)
                     if getattr(m, "encoding", None) in counts else None)
    time.sleep(seconds)
print(counts, flush=True)
"""


CONSUMERS = """
import sys, threading, time
from camfabric.gateway.cache import FrameCache
from camfabric.protocol import Subscriber
endpoint, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
cams = [0, 1, 2]
stop = threading.Event()
got = {"uploader": 0, "tracker": 0}
if mode == "none":
    pass
elif mode == "before":
    consumers = [Subscriber(endpoint),  # the gateway: every announced camera's JPEG
                 Subscriber(endpoint, cameras=cams), Subscriber(endpoint, cameras=cams)]
    for sub in consumers:
        sub.start()
else:
    gateway = FrameCache(endpoint).start()

    def service(name, interval):
        with Subscriber(endpoint, cameras=cams, on_demand=True, idle_s=1.0) as sub:
            while not stop.wait(interval):
                for cam in cams:
                    sub.latest(cam, timeout=3.0, max_age_s=1.0)
                    sub.release(cam)
                    got[name] += 1

    threads = [threading.Thread(target=service, args=("uploader", 10.0), daemon=True),
               threading.Thread(target=service, args=("tracker", 2.0), daemon=True)]
    for thread in threads:
        thread.start()
time.sleep(seconds)
stop.set()
print(got, flush=True)
"""


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(folder: Path, port: int, fps: float) -> None:
    """The sender: like `rpicam-vid --listen`, stream the folder's JPEGs to one client at a time."""
    jpegs = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        client, _ = listener.accept()
        next_at, n = time.monotonic(), 0
        try:
            while True:
                client.sendall(jpegs[n % len(jpegs)])
                n += 1
                next_at += 1.0 / fps
                time.sleep(max(0.0, next_at - time.monotonic()))
        except OSError:
            client.close()


def make_pictures(folder: Path) -> int:
    """FRAMES pictures of the synthetic scene, as JPEG (quality 85) and as PPM; mean JPEG size."""
    source = SyntheticSource(WIDTH, HEIGHT, 1000.0, label="benchmark")
    source.open()
    sizes = []
    for i in range(FRAMES):
        image = source.read(timeout=1.0).image
        jpeg = encode_jpeg(image, 85)
        sizes.append(len(jpeg))
        (folder / f"{i:03d}.jpg").write_bytes(jpeg)
        cv2.imwrite(str(folder / "ppm" / f"{i:03d}.ppm"), image)
    source.close()
    return sum(sizes) // len(sizes)


@dataclass
class Result:
    name: str
    frames: int
    cpu_s: float
    seconds: float
    counters: dict

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.cpu_s / max(1, self.frames)


def run_scenario(name: str, camera: CameraConfig, encodings: str, seconds: float) -> Result:
    endpoint = f"tcp://127.0.0.1:{unused_port()}"
    node = CaptureNode(NodeConfig(name="bench", publish=endpoint, cameras=(camera,)))
    with node:
        child = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, endpoint, encodings, str(seconds + 4)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(2.0)  # subscriber connected, stream flowing, caches warm
            loop = node.loops[0]
            frames0, cpu0, t0 = loop.counters["frames"], time.process_time(), time.monotonic()
            time.sleep(seconds)
            frames1, cpu1, t1 = loop.counters["frames"], time.process_time(), time.monotonic()
            counters = loop.counters.snapshot()
        finally:
            out, _ = child.communicate(timeout=seconds + 15)
    print(f"  {name}: subscriber received {out.strip()}", file=sys.stderr)
    return Result(name, frames1 - frames0, cpu1 - cpu0, t1 - t0, counters)


@dataclass
class IdleResult:
    name: str
    seconds: float
    cpu_s: float
    frames: int
    encodes: int


def run_idle(mode: str, seconds: float) -> IdleResult:
    """A node with three raw 1080p30 cameras and the consumers of `mode` (see the docstring)."""
    endpoint = f"tcp://127.0.0.1:{unused_port()}"
    node = CaptureNode(NodeConfig(name="bench", publish=endpoint, cameras=demo_cameras(1920, 1080, 30)))
    with node:
        child = subprocess.Popen([sys.executable, "-c", CONSUMERS, endpoint, mode, str(seconds + 6)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(4.0)  # consumers connected, cameras announced
            loops = node.loops.values()
            frames0 = sum(loop.counters["frames"] for loop in loops)
            encodes0 = sum(loop.counters["encodes"] for loop in loops)
            cpu0, t0 = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = time.process_time(), time.monotonic()
            frames1 = sum(loop.counters["frames"] for loop in loops)
            encodes1 = sum(loop.counters["encodes"] for loop in loops)
        finally:
            out, _ = child.communicate(timeout=seconds + 20)
    print(f"  {mode}: consumers got {out.strip()}", file=sys.stderr)
    return IdleResult(mode, t1 - t0, cpu1 - cpu0, frames1 - frames0, encodes1 - encodes0)


def idle_section(seconds: float) -> str:
    results = [run_idle(mode, seconds) for mode in ("none", "before", "after")]
    rows = ["| consumers | node CPU % of one core | frames captured/s | node CPU ms per frame "
            "| JPEG encodes/s | encodes per camera per 2 s |", "|---|---|---|---|---|---|"]
    names = {"none": "no consumer at all (the cameras' own cost: drawing the scenes)",
             "before": "gateway + uploader + tracker subscribed to JPEG all the time",
             "after": "idle gateway on demand; uploader every 10 s, tracker every 2 s"}
    for r in results:
        rows.append(f"| {names[r.name]} | {100 * r.cpu_s / r.seconds:.1f} | {r.frames / r.seconds:.1f} "
                    f"| {1000 * r.cpu_s / max(1, r.frames):.2f} | {r.encodes / r.seconds:.1f} "
                    f"| {2 * r.encodes / r.seconds / 3:.2f} |")
    table = "\n".join(rows)
    print(table)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""## Node CPU with idle consumers: subscriptions on demand (`benchmarks/node_cpu.py --idle`)

Measured on {stamp}: one real CaptureNode with three synthetic (raw) 1920x1080 cameras at
30 fps, {seconds:g} s window; the consumers run in a child process (their CPU not counted) and
nobody watches any camera. "Before" reproduces how the consumers subscribed until now (the
gateway to every camera's JPEG from the start, the uploader and the tracker continuously);
"after" is the gateway's `FrameCache` on demand, and stand-ins for the uploader and the tracker
that subscribe around their 10 s / 2 s intervals with the `Subscriber(on_demand=True)` API
(`latest(cam, max_age_s=1)`, then `release(cam)`) — the services themselves adopt that API
separately. The node's CPU includes drawing the synthetic scenes, which no subscription saves:
the first row, with no consumer at all, is that floor. Where the machine is busy the node
gets less than the CPU it asks for and the cameras fall below 30 fps ("frames captured/s"); the
CPU per captured frame is the figure that load disturbs least.

{table}

Machine: a 2-core Intel Xeon VM, 24 GiB, Python {platform.python_version()}, shared with other
work while measuring (treat the figures as ratios of one run):

```
{machine()}
```
"""


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        head = "\n".join(lscpu.splitlines()[:10])
    except (OSError, subprocess.SubprocessError):
        head = platform.processor() or platform.machine()
    return f"{head}\nPython {platform.python_version()}, OpenCV {cv2.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring window per scenario")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    parser.add_argument("--idle", action="store_true",
                        help="also measure the node with idle consumers, before/after on demand")
    parser.add_argument("--idle-only", action="store_true", help="only the idle-consumers part")
    parser.add_argument("--idle-seconds", type=float, default=20.0,
                        help="measuring window of the idle-consumers part")
    parser.add_argument("--serve", nargs=3, metavar=("DIR", "PORT", "FPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), float(args.serve[2]))
        return 0
    logging.basicConfig(level=logging.WARNING)
    if args.idle or args.idle_only:
        section = idle_section(args.idle_seconds)
        if not args.no_write:
            write_section("node-idle", section)
            print("written to docs/benchmarks.md")
        if args.idle_only:
            return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "ppm").mkdir()
        mean_jpeg = make_pictures(folder)
        port = unused_port()
        sender = subprocess.Popen([sys.executable, __file__, "--serve", str(folder), str(port), str(FPS)])
        try:
            common = {"id": 0, "resolution": (WIDTH, HEIGHT), "fps": FPS}
            mjpeg = CameraConfig(**common, source={"kind": "rpicam", "spawn": False, "port": port})
            raw = CameraConfig(**common, source={"kind": "file", "path": str(folder / "ppm")})
            time.sleep(0.5)
            results = [
                run_scenario("MJPEG passthrough (jpeg subscriber)", mjpeg, "jpeg", args.seconds),
                run_scenario("MJPEG + raw subscriber (jpeg + bgr8)", mjpeg, "jpeg,bgr8", args.seconds),
                run_scenario("raw source, encode (jpeg subscriber)", raw, "jpeg", args.seconds),
            ]
        finally:
            sender.terminate()
            sender.wait(5)

    header = (f"{WIDTH}x{HEIGHT} at {FPS:g} fps, JPEG quality 85 (mean {mean_jpeg // 1024} KiB), "
              f"{args.seconds:g} s per scenario")
    rows = ["| scenario | frames | fps | node CPU ms/frame | CPU % of one core "
            "| passthrough | decodes | encodes |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.counters
        rows.append(f"| {r.name} | {r.frames} | {r.frames / r.seconds:.1f} | {r.ms_per_frame:.2f} | "
                    f"{100 * r.cpu_s / r.seconds:.1f} | {c['passthrough']} | {c['decodes']} "
                    f"| {c['encodes']} |")
    table = "\n".join(rows)
    print(header)
    print(table)
    if not args.no_write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = f"""# Capture node CPU per frame

Measured by `benchmarks/node_cpu.py` on {stamp}: one real CaptureNode per scenario, one camera,
a subscriber in a child process (its CPU not counted). CPU is the node process's
`time.process_time()` over the window divided by the frames captured in it (all its threads:
stream reading and cutting, capture loop, publisher, heartbeat). The MJPEG stream comes from a
sender process over TCP, read by the rpicam source as from `rpicam-vid --listen`; the raw
source reads the same pictures as PPM files (that read is part of its cost).

{header}

{table}

The last three columns count the camera's work over the whole run, warm-up included.

- **passthrough**: the camera's JPEG bytes are published as they arrived; no decode, no encode.
- **+ raw subscriber**: each frame is decoded once (shared by every bgr8 subscriber) and the
  raw picture ({WIDTH * HEIGHT * 3 // 1024} KiB) is published as well.
- **raw, encode**: each frame is JPEG-encoded once, because someone subscribes to JPEG.

Machine (shared with other work while measuring, so treat the figures as ratios of one run):

```
{machine()}
```
"""
        title = "## Capture node CPU per frame (`benchmarks/node_cpu.py`)"
        write_section("node-cpu", text.replace("# Capture node CPU per frame", title, 1))
        print("written to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
