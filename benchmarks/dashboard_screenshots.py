"""Screenshots of the dashboard in headless Chromium: a healthy fabric, one camera down, a phone.

    python benchmarks/dashboard_screenshots.py [--out docs/dashboard] [--chromium chromium]

Runs the demo's tabletop scene on loopback — cameras 0 and 1 on one node, camera 2 on a
second node, the tracker and the gateway — and photographs http://127.0.0.1:PORT/:

    healthy.png       1280×900, every camera live, the world model's objects
    camera-down.png   1280×900, the second node killed: camera 2 down with its last error
    phone.png         390×1800 (an iPhone's width), the same fabric with every URL shown

Chromium's console is captured as well (`--enable-logging=stderr`): the script fails when the
page logged anything to it (an error, a resource that failed to load).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests
import zmq

from camfabric.capture_node.config import NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.sim.tracker import start_demo_tracker, tabletop_cameras

NODE_A = "tcp://127.0.0.1:15550"
NODE_B = "tcp://127.0.0.1:15551"
TRACKER = "tcp://127.0.0.1:15560"
CONSOLE = re.compile(r'CONSOLE.*?"(?P<text>.*?)", source: (?P<source>\S*)')


def shoot(chromium: str, url: str, path: Path, width: int, height: int, wait_ms: int = 6000) -> list[str]:
    """A PNG of `url` after `wait_ms`; returns the console messages the page logged."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--virtual-time-budget={wait_ms}", "--enable-logging=stderr", "--v=0",
             f"--screenshot={path}", url],
            capture_output=True, text=True, timeout=120)
    if not path.is_file():
        raise SystemExit(f"chromium made no screenshot:\n{result.stderr[-2000:]}")
    return [m.group(0) for m in CONSOLE.finditer(result.stderr)]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    context = zmq.Context.instance()
    cameras = tabletop_cameras(640, 360, 15)
    errors: list[str] = []
    with ExitStack() as stack:
        stack.enter_context(CaptureNode(NodeConfig(name="cell", publish=NODE_A, cameras=cameras[:2]),
                                        context=context))
        side = CaptureNode(NodeConfig(name="side-pi", publish=NODE_B, cameras=cameras[2:]), context=context)
        side.start()
        stack.callback(side.stop)
        stack.enter_context(start_demo_tracker(NODE_A, TRACKER, context=context, interval_s=1.0))
        gateway = stack.enter_context(Gateway(GatewayConfig(port=0, subscribe=(NODE_A, NODE_B, TRACKER)),
                                              context=context))
        url = gateway.url

        def status() -> dict:
            return requests.get(url + "status", timeout=5).json()

        wait_for(lambda: len(status()) == 3 and all(s["connected"] for s in status().values()),
                 20, "three live cameras")
        wait_for(lambda: requests.get(url + "world", timeout=5).json()["objects"], 30, "world objects")
        errors += shoot(args.chromium, url, args.out / "healthy.png", 1280, 900)
        errors += shoot(args.chromium, url + "#urls", args.out / "phone.png", 390, 1800)
        side.stop()  # the second node goes away without a word: its heartbeat stops
        wait_for(lambda: not status()["2"]["connected"], 10, "camera 2 reported down")
        time.sleep(1.5)
        errors += shoot(args.chromium, url, args.out / "camera-down.png", 1280, 900)
        snapshot = requests.get(url + "snapshot.jpg?cam=2", timeout=5)
        print(f"/snapshot.jpg?cam=2 with the node gone: {snapshot.status_code} {snapshot.text}")
    for line in errors:
        print("console:", line)
    # The dashboard logs nothing on its own: any console message (an error, a failed load) fails.
    print(f"screenshots in {args.out}; {len(errors)} console messages")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
