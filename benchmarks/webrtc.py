"""MJPEG against WebRTC for the same camera: bytes per viewer, picture quality, latency, node CPU.

    python -m benchmarks.webrtc [--seconds 10] [--width 1280 --height 720 --fps 15]

One synthetic camera (a moving scene) on a capture node, a gateway, and viewers in this
process, each part in a process of its own. The source stamps every picture with its capture
time (24 bits of wall-clock milliseconds as black and white blocks along the top edge), so a
viewer reads the capture time back from the decoded picture: latency is capture → decoded at
the viewer, on the one clock of this host (loopback). Quality is PSNR of the decoded picture
against the node's raw picture of the same capture (`bgr8` from the fabric, subscribed only
during the quality phase so that it costs nothing elsewhere).

Phases, each `--seconds` long: nobody watching (the node's CPU per capture with no encode), one
WebRTC viewer (WHEP, aiortc as the browser), ten WebRTC viewers, one MJPEG viewer (`GET
/cam/0`; last, because the gateway keeps a camera's JPEG subscribed after its first MJPEG
stream ends), then both at once for the quality figures. Node CPU is the node process's CPU
time (every thread: x264 runs its own) per capture, less the idle phase's. Bytes: MJPEG counts
the HTTP body (parts and their headers), WebRTC the H.264 payload the gateway sent
(`camfabric_webrtc_bytes_sent_total`; RTP, SRTP and UDP headers add about 5 % to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import psutil
import requests

STAMP_BITS = 24
BLOCK = 16


def stamp(image: np.ndarray, value: int) -> None:
    for bit in range(STAMP_BITS):
        image[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if value >> bit & 1 else 0


def read_stamp(image: np.ndarray) -> int:
    value = 0
    for bit in range(STAMP_BITS):
        if image[4:BLOCK - 4, bit * BLOCK + 4:(bit + 1) * BLOCK - 4].mean() > 128:
            value |= 1 << bit
    return value


def stamp_of_ns(t_ns: int) -> int:
    return (t_ns // 1_000_000) % (1 << STAMP_BITS)


def latency_ms(value: int, now_ns: int | None = None) -> int:
    return (stamp_of_ns(now_ns or time.time_ns()) - value) % (1 << STAMP_BITS)


# -- the two serving processes ---------------------------------------------------------------
def run_node(w: int, h: int, fps: float) -> None:
    from camfabric.capture_node.config import CameraConfig, NodeConfig
    from camfabric.capture_node.node import CaptureNode
    from camfabric.capture_node.sources.synthetic import SyntheticSource

    class StampedSource(SyntheticSource):
        def read(self, timeout: float):
            capture = super().read(timeout)
            stamp(capture.image, stamp_of_ns(capture.t_capture_ns))
            return capture

    camera = CameraConfig(id=0, name="Bench", resolution=(w, h), fps=fps)
    node = CaptureNode(NodeConfig(name="bench", publish="tcp://127.0.0.1:0", cameras=(camera,)),
                       sources={0: StampedSource(w, h, fps, label="bench")}).start()
    print(node.endpoint, flush=True)
    sys.stdin.read()
    node.stop()


def run_gateway(endpoint: str) -> None:
    from camfabric.gateway.config import GatewayConfig
    from camfabric.gateway.server import Gateway

    gateway = Gateway(GatewayConfig(port=0, subscribe=(endpoint,))).start()
    print(gateway.url, flush=True)
    sys.stdin.read()
    gateway.stop()


def spawn(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.webrtc", *args],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


# -- viewers ---------------------------------------------------------------------------------
class Pictures:
    """Decoded pictures of one viewer: latency of each, a few kept for PSNR."""

    def __init__(self, keep: bool = False) -> None:
        self.latencies: list[int] = []
        self.kept: dict[int, np.ndarray] = {}
        self.keep = keep
        self.count = 0

    def add(self, image: np.ndarray) -> None:
        value = read_stamp(image)
        self.latencies.append(latency_ms(value))  # now: as the picture is decoded
        self.count += 1
        if self.keep and len(self.kept) < 200:
            self.kept[value] = image


def watch_mjpeg(url: str, seconds: float, pictures: Pictures) -> int:
    """Read /cam/0 for `seconds`; returns the body bytes received."""
    received = 0
    buffer = b""
    deadline = time.monotonic() + seconds
    with requests.get(url + "cam/0", stream=True, timeout=10) as answer:
        for chunk in answer.iter_content(65536):
            received += len(chunk)
            buffer += chunk
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = buffer[:head_end].decode("latin-1")
                length = int(next(line.split(":")[1] for line in head.splitlines()
                                  if line.lower().startswith("content-length")))
                if len(buffer) < head_end + 4 + length:
                    break
                jpeg = buffer[head_end + 4:head_end + 4 + length]
                buffer = buffer[head_end + 4 + length:]
                pictures.add(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
            if time.monotonic() > deadline:
                break
    return received


async def watch_webrtc(url: str, seconds: float, pictures: Pictures, look: bool = True) -> None:
    from camfabric.sim.whep_client import view

    def on_picture(picture) -> None:
        if look:
            pictures.add(picture.to_ndarray(format="bgr24"))
        else:
            pictures.count += 1

    await view(url + "webrtc/0", seconds, on_picture=on_picture)


def webrtc_bytes(url: str) -> float:
    for line in requests.get(url + "metrics", timeout=5).text.splitlines():
        if line.startswith('camfabric_webrtc_bytes_sent_total{camera="0"}'):
            return float(line.split()[-1])
    return 0.0


class Raw:
    """The node's raw pictures by stamp, while subscribed."""

    def __init__(self, endpoint: str) -> None:
        from camfabric import protocol

        self.frames: dict[int, np.ndarray] = {}
        self.sub = protocol.Subscriber(endpoint, cameras=[0], encoding="bgr8")
        self.sub.add_listener(self._on)

    def _on(self, msg) -> None:
        if getattr(msg, "encoding", "") == "bgr8" and len(self.frames) < 2000:
            self.frames[stamp_of_ns(msg.t_capture_ns)] = np.array(msg.image)

    def psnr(self, pictures: Pictures) -> float | None:
        values = [cv2.PSNR(self.frames[k], v) for k, v in pictures.kept.items() if k in self.frames]
        return round(statistics.median(values), 1) if values else None


# -- the run ---------------------------------------------------------------------------------
class NodeCpu:
    def __init__(self, pid: int, endpoint: str) -> None:
        from camfabric import protocol

        self.process = psutil.Process(pid)
        self.sub = protocol.Subscriber(endpoint, cameras=(), topics_extra=(b"meta/",))

    def health(self) -> dict:
        meta = self.sub.meta(0)
        return dict(meta.health) if meta else {}

    def mark(self) -> tuple[float, dict]:
        times = self.process.cpu_times()
        return times.user + times.system, self.health()

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until the node encodes nothing (the last phase's subscriptions released)."""
        deadline = time.monotonic() + timeout
        before = self.health()
        while time.monotonic() < deadline:
            time.sleep(2.5)
            now = self.health()
            if all(now.get(k) == before.get(k) for k in ("encodes", "h264_encodes")):
                return
            before = now
        raise RuntimeError("the node kept encoding with nobody watching")

    @staticmethod
    def per_capture_ms(start: tuple[float, dict], end: tuple[float, dict]) -> tuple[float, dict]:
        frames = end[1]["frames"] - start[1]["frames"]
        counts = {k: end[1].get(k, 0) - start[1].get(k, 0) for k in ("frames", "encodes", "h264_encodes")}
        return 1000 * (end[0] - start[0]) / max(1, frames), counts


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        run_node(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        run_gateway(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--viewers", type=int, default=10)
    args = parser.parse_args()
    node, endpoint = spawn("node", str(args.width), str(args.height), str(args.fps))
    gateway, url = spawn("gateway", endpoint)
    cpu = NodeCpu(node.pid, endpoint)
    cpu.sub.start()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} CPUs ({platform.platform()})",
                     "camera": f"{args.width}x{args.height} at {args.fps:g} fps, synthetic"}
    try:
        while requests.get(url + "cameras", timeout=5).json() == {} or not cpu.health():
            time.sleep(0.2)
        time.sleep(2)
        start = cpu.mark()
        time.sleep(args.seconds)
        idle_ms, idle_counts = NodeCpu.per_capture_ms(start, cpu.mark())
        results["idle"] = {"node_cpu_ms_per_capture": round(idle_ms, 2), **idle_counts}

        # One WebRTC viewer.
        cpu.settle()
        pictures = Pictures()
        sent0, start, t0 = webrtc_bytes(url), cpu.mark(), time.monotonic()
        asyncio.run(watch_webrtc(url, args.seconds, pictures))
        elapsed = time.monotonic() - t0
        ms, counts = NodeCpu.per_capture_ms(start, cpu.mark())
        sent = webrtc_bytes(url) - sent0
        results["webrtc"] = {"bytes_per_s": round(sent / elapsed),
                             "pictures_per_s": round(pictures.count / args.seconds, 1),
                             "latency_ms_p50": percentile(pictures.latencies[15:], 0.5),
                             "latency_ms_p99": percentile(pictures.latencies[15:], 0.99),
                             "node_cpu_ms_per_capture": round(ms, 2),
                             "node_cpu_ms_per_encode": round(ms - idle_ms, 2), **counts}

        # Many WebRTC viewers: still one encode per capture.
        async def many() -> list[Pictures]:
            sets = [Pictures() for _ in range(args.viewers)]
            await asyncio.gather(*(watch_webrtc(url, args.seconds, p, look=False) for p in sets))
            return sets

        cpu.settle()
        sent0, start, t0 = webrtc_bytes(url), cpu.mark(), time.monotonic()
        sets = asyncio.run(many())
        elapsed = time.monotonic() - t0
        ms, counts = NodeCpu.per_capture_ms(start, cpu.mark())
        results[f"webrtc_x{args.viewers}"] = {
            "bytes_per_s_per_viewer": round((webrtc_bytes(url) - sent0) / elapsed / args.viewers),
            "pictures_per_s_per_viewer": [round(p.count / args.seconds, 1) for p in sets],
            "node_cpu_ms_per_capture": round(ms, 2), **counts}

        # One MJPEG viewer.
        cpu.settle()
        pictures = Pictures()
        start = cpu.mark()
        t0 = time.monotonic()
        body = watch_mjpeg(url, args.seconds, pictures)
        elapsed = time.monotonic() - t0
        ms, counts = NodeCpu.per_capture_ms(start, cpu.mark())
        results["mjpeg"] = {"bytes_per_s": round(body / elapsed), "pictures_per_s":
                            round(pictures.count / elapsed, 1),
                            "latency_ms_p50": percentile(pictures.latencies, 0.5),
                            "latency_ms_p99": percentile(pictures.latencies, 0.99),
                            "node_cpu_ms_per_capture": round(ms, 2),
                            "node_cpu_ms_per_encode": round(ms - idle_ms, 2), **counts}

        # Quality: both against the node's raw picture of the same capture.
        raw = Raw(endpoint)
        raw.sub.start()
        time.sleep(1)
        mjpeg_pictures, webrtc_pictures = Pictures(keep=True), Pictures(keep=True)
        reader = threading.Thread(target=watch_mjpeg, args=(url, 4, mjpeg_pictures))
        reader.start()
        asyncio.run(watch_webrtc(url, 4, webrtc_pictures))
        reader.join()
        raw.sub.close()
        results["mjpeg"]["psnr_db"] = raw.psnr(mjpeg_pictures)
        results["webrtc"]["psnr_db"] = raw.psnr(webrtc_pictures)

        results["ratio_webrtc_to_mjpeg_bytes"] = round(
            results["webrtc"]["bytes_per_s"] / results["mjpeg"]["bytes_per_s"], 3)
    finally:
        cpu.sub.close()
        for process in (gateway, node):
            process.stdin.close()
            process.wait(10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
