"""End-to-end benchmark: cameras → fabric → HTTP, against the first seed's plain server.

Three cameras at 1920x1080, 30 fps, are published on the fabric as pre-encoded JPEGs (so the
figures exclude JPEG encoding). The camfabric gateway (with each worker count asked for) and
the baseline — `http.server.ThreadingHTTPServer` serving one cached frame per camera, the first
seed's design (benchmarks/baseline_server.py) — subscribe to the same fabric and serve the same
bytes, all at once.

The fan-out run (always): for each MJPEG client count, every server in turn gets that many
stream clients spread over the three cameras (read by Content-Length in reader processes of
at most 50 clients each) while one more client polls `/latest/0`; measured over the window:

- gateway CPU per delivered part (user + system of the server's processes, its fabric
  subscriber included, divided by the parts the clients received);
- delivered fps per client (min / median; the source gives 30);
- `/latest/0` response time p50 / p99 alongside the streams.

With `--rounds N` (N > 0) it also runs the older comparison: N interleaved rounds of `/latest`
capture→HTTP latency and requests per second, MJPEG with 1 / 10 / 50 clients, and the capture
node's CPU per frame. Measured, not asserted: compare the rows of one run.

    .venv/bin/python benchmarks/e2e.py --clients 50 200 --workers 1 2 --seconds 5 --repeat 3 \
        [--out results.md] [--rounds 0] [--no-write]

On a larger machine, e.g. 50 / 200 / 400 clients and 1 / 2 / 4 workers in about 5 minutes:

    .venv/bin/python benchmarks/e2e.py --clients 50 200 400 --workers 1 2 4 --seconds 5 \
        --repeat 2 --out e2e-16core.md --no-write

`--pinning` runs each gateway pinned and not pinned; the fabric's publisher runs on the same
host, as a capture node would. `--abuse` runs only the abuse measurement. `--out` writes the
report to that file; unless `--no-write`, it also goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import multiprocessing as mp
import os
import platform
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from report import write_section  # noqa: E402

from camfabric import protocol  # noqa: E402

W, H, FPS, CAMS = 1920, 1080, 30, 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_jpegs(n: int = 10) -> list[bytes]:
    """A few distinct 1080p frames with shapes, gradients and text: typical JPEG sizes."""
    rng = np.random.default_rng(1)
    base = np.zeros((H, W, 3), np.uint8)
    base[:] = np.linspace(40, 160, W, dtype=np.uint8)[None, :, None]
    frames = []
    for i in range(n):
        img = base.copy()
        for _ in range(12):
            x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.circle(img, (x, y), int(rng.integers(20, 200)), color, -1)
        cv2.putText(img, f"bench {i}", (60, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6)
        frames.append(protocol.encode_jpeg(img, 80))
    return frames


def drive(endpoint: str, ready: mp.Event, stop: mp.Event) -> None:
    """Publish CAMS cameras at FPS, stamping capture time just before publishing."""
    jpegs = make_jpegs()
    with protocol.Publisher(endpoint) as pub:
        for cam in range(CAMS):
            pub.publish(protocol.Meta(cam=cam, node="bench", registry={"id": cam, "name": f"cam{cam}",
                                      "resolution": [W, H]}, health={"connected": True, "fps": FPS}))
        ready.set()
        period = 1 / FPS
        next_t = time.monotonic()
        seq = 0
        last_meta = time.monotonic()
        while not stop.is_set():
            seq += 1
            for cam in range(CAMS):
                data = jpegs[(seq + cam) % len(jpegs)]
                pub.publish(protocol.Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=W, h=H,
                                           encoding="jpeg", data=data, node="bench"))
            if time.monotonic() - last_meta > 1:
                last_meta = time.monotonic()
                for cam in range(CAMS):
                    pub.publish(protocol.Meta(cam=cam, node="bench", registry={"id": cam},
                                              health={"connected": True, "fps": FPS}))
            next_t += period
            stop.wait(max(0.0, next_t - time.monotonic()))


# -- clients ---------------------------------------------------------------------------------
def poll_latest(port: int, seconds: float) -> list[float]:
    """Poll /latest/0 on one keep-alive connection; latency (ms) of each newly seen frame."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen: set[str] = set()
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.request("GET", "/latest/0")
        resp = conn.getresponse()
        resp.read()
        now = time.time()
        if resp.status != 200:
            time.sleep(0.01)
            continue
        stamp = resp.getheader("X-Timestamp")
        if stamp is not None:
            if stamp not in seen:
                seen.add(stamp)
                latencies.append((now - float(stamp)) * 1000)
        else:  # only the age header: the frame's age when the response was sent
            age = resp.getheader("X-Frame-Age-Ms")
            key = resp.getheader("ETag") or age
            if key not in seen:
                seen.add(key)
                latencies.append(float(age))
        time.sleep(0.001)
    conn.close()
    return latencies


@dataclass
class StreamClient:
    sock: socket.socket
    head: bytearray = field(default_factory=bytearray)  # the HTTP response head, until parsed
    http_done: bool = False
    chunked: bool = False
    chunk_left: int = 0
    size_line: bytearray = field(default_factory=bytearray)
    buf: bytearray = field(default_factory=bytearray)  # multipart bytes not yet parsed
    body_left: int = 0
    stamp: float = 0.0
    parts: int = 0
    latencies: list[float] = field(default_factory=list)


HEADER_RE = re.compile(rb"Content-Length:\s*(\d+)", re.I)
STAMP_RE = re.compile(rb"X-Timestamp:\s*([\d.]+)", re.I)


def receive(c: StreamClient, data: memoryview, warm: float) -> None:
    """Bytes from the socket: the HTTP head, then the body (de-chunked when chunked)."""
    if not c.http_done:
        c.head += data
        end = c.head.find(b"\r\n\r\n")
        if end < 0:
            return
        c.http_done = True
        c.chunked = b"transfer-encoding: chunked" in bytes(c.head[:end]).lower()
        data = memoryview(bytes(c.head[end + 4 :]))
        c.head = bytearray()
    if not c.chunked:
        feed(c, data, warm)
        return
    i, n = 0, len(data)
    while i < n:
        if c.chunk_left:  # inside a chunk: its bytes are multipart bytes
            take = min(c.chunk_left, n - i)
            feed(c, data[i : i + take], warm)
            c.chunk_left -= take
            i += take
            continue
        nl = bytes(data[i:n]).find(b"\n")  # a size line ("\r\n" after a chunk, then "1a2b\r\n")
        if nl < 0:
            c.size_line += data[i:n]
            return
        c.size_line += data[i : i + nl]
        i += nl + 1
        line = bytes(c.size_line).strip()
        c.size_line = bytearray()
        if line:
            c.chunk_left = int(line.split(b";")[0], 16)


def feed(c: StreamClient, data: memoryview, warm: float) -> None:
    """Advance one client's multipart parser over `data`, trusting Content-Length."""
    if c.body_left >= len(data) and not c.buf:  # the common case: body bytes, no copy
        c.body_left -= len(data)
        if c.body_left == 0:
            part_done(c, warm)
        return
    c.buf += data
    while True:
        if c.body_left:
            take = min(c.body_left, len(c.buf))
            del c.buf[:take]
            c.body_left -= take
            if c.body_left:
                return
            part_done(c, warm)
        start = c.buf.find(b"--frame")
        head_end = c.buf.find(b"\r\n\r\n", max(start, 0))
        if start < 0 or head_end < 0:
            return
        head = bytes(c.buf[start:head_end])
        del c.buf[: head_end + 4]
        length, stamp = HEADER_RE.search(head), STAMP_RE.search(head)
        c.body_left = int(length.group(1)) if length else 0
        c.stamp = float(stamp.group(1)) if stamp else 0.0


def part_done(c: StreamClient, warm: float) -> None:
    if time.monotonic() >= warm:
        c.parts += 1
        if c.stamp:
            c.latencies.append((time.time() - c.stamp) * 1000)


def open_streams(port: int, paths: list[str], seconds: float, warm_s: float) -> list[StreamClient]:
    """Open one MJPEG stream per path and read them all for warm_s + seconds, counting the parts
    each receives after warm_s (trusting Content-Length) with each part's capture→receive
    latency."""
    sel = selectors.DefaultSelector()
    conns = []
    for path in paths:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        sock.setblocking(False)
        client = StreamClient(sock)
        sel.register(sock, selectors.EVENT_READ, client)
        conns.append(client)
    warm = time.monotonic() + warm_s
    end = warm + seconds
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            c: StreamClient = key.data
            try:
                n = c.sock.recv_into(chunk)
            except (BlockingIOError, ConnectionError):
                continue
            if n == 0:
                sel.unregister(c.sock)
                continue
            receive(c, view[:n], warm)
    for c in conns:
        c.sock.close()
    return conns


def read_streams(port: int, clients: int, seconds: float, out: mp.Queue) -> None:
    """`clients` MJPEG streams of /cam/0: fps per client and every part's latency."""
    conns = open_streams(port, ["/cam/0"] * clients, seconds, 1.0)
    out.put(([c.parts / seconds for c in conns], [x for c in conns for x in c.latencies]))


def stream_fps(port: int, clients: int, seconds: float) -> tuple[list[float], list[float]]:
    queue: mp.Queue = mp.Queue()
    proc = mp.Process(target=read_streams, args=(port, clients, seconds, queue))
    proc.start()
    result = queue.get(timeout=seconds + 30)
    proc.join(5)
    return result


def requests_per_second(port: int, seconds: float) -> tuple[float, str]:
    url = f"http://127.0.0.1:{port}/latest/0"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{max(2, int(seconds))}s", url],
                             capture_output=True, text=True, timeout=seconds + 30).stdout
        match = re.search(r"Requests/sec:\s*([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        if errors:
            return float("nan"), f"wrk saw {errors.group(1)} error responses"
        return (float(match.group(1)) if match else float("nan")), "wrk -t2 -c16"
    count = 0
    end = time.monotonic() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while time.monotonic() < end:
        conn.request("GET", "/latest/0")
        conn.getresponse().read()
        count += 1
    return count / seconds, "one Python keep-alive client"


# -- the fan-out run ---------------------------------------------------------------------------
READERS_MAX_CLIENTS = 50  # stream clients per reader process


def read_streams_spread(port: int, clients: int, first_cam: int, seconds: float, warm_s: float,
                        out: mp.Queue) -> None:
    """Streams of cameras first_cam, first_cam + 1, … (mod CAMS): fps per client."""
    paths = [f"/cam/{(first_cam + i) % CAMS}" for i in range(clients)]
    out.put([c.parts / seconds for c in open_streams(port, paths, seconds, warm_s)])


def latest_times(port: int, seconds: float, warm_s: float, out: mp.Queue) -> None:
    """Response times (ms) of /latest/0 on one keep-alive connection, ~50 requests a second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times: list[float] = []
    failures = 0
    start = time.monotonic() + warm_s
    end = start + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            conn.request("GET", "/latest/0")
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        elapsed = time.monotonic() - t0
        if t0 >= start:
            if ok:
                times.append(elapsed * 1000)
            else:
                failures += 1
        time.sleep(max(0.0, 0.02 - elapsed))
    conn.close()
    out.put((times, failures))


def hammer_latest(port: int, seconds: float, warm_s: float, out: mp.Queue) -> None:
    """As many /latest/0 requests as one keep-alive connection gets answered; the count."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    count = 0
    start = time.monotonic() + warm_s
    end = start + seconds
    while (now := time.monotonic()) < end:
        conn.request("GET", "/latest/0")
        conn.getresponse().read()
        count += now >= start
    conn.close()
    out.put(count)


def latest_throughput(port: int, seconds: float, clients: int = 4) -> float:
    """/latest/0 requests per second answered to `clients` processes asking as fast as they can."""
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=hammer_latest, args=(port, seconds, 1.0, queue)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(queue.get(timeout=seconds + 30) for _ in procs)
    for proc in procs:
        proc.join(10)
    return total / seconds


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def fanout(port: int, pid: int, clients: int, seconds: float) -> dict:
    """`clients` MJPEG streams and one /latest poller against one server, measured together."""
    warm_s = 2.0 + clients / 100  # connecting and the first parts are not measured
    queue: mp.Queue = mp.Queue()
    readers = []
    for first in range(0, clients, READERS_MAX_CLIENTS):
        n = min(READERS_MAX_CLIENTS, clients - first)
        readers.append(mp.Process(target=read_streams_spread,
                                  args=(port, n, first, seconds, warm_s, queue)))
    poller_queue: mp.Queue = mp.Queue()
    poller = mp.Process(target=latest_times, args=(port, seconds, warm_s, poller_queue))
    for proc in [*readers, poller]:
        proc.start()
    time.sleep(warm_s)
    cpu_start = tree_cpu(pid)
    time.sleep(seconds)
    cpu = tree_cpu(pid) - cpu_start
    fps = [x for _ in readers for x in queue.get(timeout=seconds + 120)]
    times, failures = poller_queue.get(timeout=seconds + 60)
    for proc in [*readers, poller]:
        proc.join(10)
    parts = sum(fps) * seconds
    return {"clients": clients, "fps": fps, "parts": parts, "cpu_s": cpu,
            "us_per_part": cpu / parts * 1e6 if parts else float("nan"),
            "latest": times, "latest_failures": failures}


def merge_rounds(results: list[dict]) -> dict:
    """One row from repeated measurements of one server and client count."""
    per_part = [r["us_per_part"] for r in results]
    return {"clients": results[0]["clients"], "rounds": len(results),
            "fps": [x for r in results for x in r["fps"]],
            "round_fps_min": [min(r["fps"]) for r in results],
            "us_per_part": statistics.median(per_part), "us_range": (min(per_part), max(per_part)),
            "cpu_s": statistics.median(r["cpu_s"] for r in results),
            "latest": [x for r in results for x in r["latest"]],
            "latest_failures": sum(r["latest_failures"] for r in results)}


def render_fanout(rows: list[tuple[str, dict]], seconds: float, stolen: float,
                  source: str = "pre-encoded JPEG") -> str:
    lines = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on: {machine()}",
        f"Source: {CAMS} cameras, {W}x{H}, {FPS} fps, {source}. Each row: that many MJPEG "
        f"clients spread over the {CAMS} cameras plus one client polling `/latest/0` (~50/s), "
        f"{seconds:g} s measured after a warm-up; all servers subscribed to the fabric at once, "
        f"measured one at a time, in {rows[0][1]['rounds'] if rows else 0} interleaved rounds. "
        f"The hypervisor took {stolen:.0%} of the CPU time (steal).",
        "",
        "| server | MJPEG clients | gateway CPU per delivered part, µs: median (rounds' range) "
        "| CPU cores used | fps per client, min / median | /latest p50 / p99 ms (failed) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        fps = r["fps"]
        low, high = r["us_range"]
        lines.append(
            f"| {name} | {r['clients']} | {r['us_per_part']:.0f} ({low:.0f}–{high:.0f}) | "
            f"{r['cpu_s'] / seconds:.2f} | {min(fps):.1f} / {statistics.median(fps):.1f} | "
            f"{pct(r['latest'], 50):.1f} / {pct(r['latest'], 99):.1f} ({r['latest_failures']}) |")
    return "\n".join(lines)


# -- abuse: idle sockets, a slowloris and slow readers against /latest ----------------------------
IDLE_SOCKETS, SLOWLORIS_SOCKETS, SLOW_READERS = 200, 20, 200


def abuse_load(port: int, seconds: float, out: mp.Queue) -> None:
    """Hold IDLE_SOCKETS connections that send nothing, SLOWLORIS_SOCKETS that send a request
    head one byte a second, and SLOW_READERS that ask for /latest/0 and read it at one byte a
    second (4 KiB receive buffer); reopen whatever the server closes, counting it."""
    def connect(request: bytes = b"", rcvbuf: int | None = None) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            if request:
                sock.sendall(request)
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def gone(sock: socket.socket | None, read: int) -> bool:
        """Read up to `read` bytes; True when the server closed or reset the connection."""
        if sock is None:
            return True
        try:
            return sock.recv(read) == b"" if read else sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    reader_req = b"GET /latest/0 HTTP/1.1\r\nHost: abuse\r\n\r\n"
    idle = [connect() for _ in range(IDLE_SOCKETS)]
    loris = [connect(b"GET /latest/0 HTTP/1.1\r\n") for _ in range(SLOWLORIS_SOCKETS)]
    readers = [connect(reader_req, rcvbuf=4096) for _ in range(SLOW_READERS)]
    closed = {"idle": 0, "slowloris": 0, "slow reader": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, sock in enumerate(idle):
            if gone(sock, 0):
                closed["idle"] += 1
                if sock is not None:
                    sock.close()
                idle[i] = connect()
        for i, sock in enumerate(loris):
            try:
                if sock is None or gone(sock, 0):
                    raise OSError
                sock.send(b"X")
            except OSError:
                closed["slowloris"] += 1
                if sock is not None:
                    sock.close()
                loris[i] = connect(b"GET /latest/0 HTTP/1.1\r\n")
        for i, sock in enumerate(readers):
            if gone(sock, 1):
                closed["slow reader"] += 1
                if sock is not None:
                    sock.close()
                readers[i] = connect(reader_req, rcvbuf=4096)
        time.sleep(1.0)
    for sock in [*idle, *loris, *readers]:
        if sock is not None:
            sock.close()
    out.put(closed)


def abuse(port: int, seconds: float) -> list[tuple[str, list[float], int, dict]]:
    """/latest/0 response times without abuse, then under abuse_load (after 3 s of it)."""
    rows = []
    queue: mp.Queue = mp.Queue()
    poller = mp.Process(target=latest_times, args=(port, seconds, 0.5, queue))
    poller.start()
    times, failures = queue.get(timeout=seconds + 60)
    poller.join(10)
    rows.append(("none", times, failures, {}))
    load_queue: mp.Queue = mp.Queue()
    load = mp.Process(target=abuse_load, args=(port, seconds + 6, load_queue))
    load.start()
    poller = mp.Process(target=latest_times, args=(port, seconds, 3.0, queue))
    poller.start()
    times, failures = queue.get(timeout=seconds + 60)
    closed = load_queue.get(timeout=seconds + 60)
    poller.join(10)
    load.join(10)
    rows.append((f"{IDLE_SOCKETS} idle sockets + {SLOWLORIS_SOCKETS} slowloris + {SLOW_READERS} "
                 "slow readers (1 byte/s)", times, failures, closed))
    return rows


def render_abuse(name: str, rows: list[tuple[str, list[float], int, dict]], seconds: float) -> str:
    lines = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on: {machine()}",
        f"{name}, the fabric as above (3 × {W}x{H} at {FPS} fps); one client polls `/latest/0` "
        f"(~50/s) for {seconds:g} s without abuse, then for {seconds:g} s with it (after 3 s of "
        "it). The abusers reopen every connection the gateway closes; the last column counts "
        "those closings over the abuse.",
        "",
        "| abuse | /latest p50 / p99 / max ms | answered (failed) | connections the gateway closed |",
        "|---|---|---|---|",
    ]
    for what, times, failures, closed in rows:
        cut = ", ".join(f"{k} {v}" for k, v in closed.items()) or "–"
        lines.append(f"| {what} | {pct(times, 50):.1f} / {pct(times, 99):.1f} / "
                     f"{max(times, default=float('nan')):.1f} | {len(times)} ({failures}) | {cut} |")
    return "\n".join(lines)


# -- servers ---------------------------------------------------------------------------------
def wait_http(port: int, path: str = "/latest/0", timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not serve {path} in {timeout} s")


def start_gateway(port: int, endpoint: str, workers: int, tmp: Path,
                  max_streams: int = 64, pin: bool | None = None) -> subprocess.Popen:
    config = tmp / f"gateway-{port}.toml"
    pinning = "" if pin is None else f"pin_cpus = {str(pin).lower()}\n"
    config.write_text(f'[gateway]\nport = {port}\nsubscribe = ["{endpoint}"]\n'
                      f"workers = {workers}\nmax_streams = {max_streams}\n{pinning}")
    return subprocess.Popen([sys.executable, "-m", "camfabric.cli", "gateway", "--config", str(config),
                             "--log-level", "WARNING"], cwd=REPO)


def start_baseline(port: int, endpoint: str, nodelay: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "baseline_server.py"),
                             str(port), endpoint, *(["nodelay"] if nodelay else [])], cwd=REPO)


def stolen_share() -> tuple[float, float]:
    """(steal jiffies, all jiffies) from /proc/stat: CPU time the hypervisor took from us."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return float(fields[7]) if len(fields) > 7 else 0.0, float(sum(fields))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def measure_round(ports: dict[str, int], seconds: float, acc: dict[str, dict]) -> None:
    """One round over every server, in turn: /latest latency, then requests per second."""
    for name, port in ports.items():
        r = acc.setdefault(name, {"name": name, "latest": [], "rps": [], "rps_tool": ""})
        r["latest"] += poll_latest(port, seconds)
        rps, tool = requests_per_second(port, seconds)
        r["rps"].append(rps)
        r["rps_tool"] = tool


def measure_streams(name: str, port: int, seconds: float, r: dict) -> None:
    for clients in (1, 10, 50):
        print(f"  {name}: {clients} MJPEG clients …", file=sys.stderr)
        fps, lats = stream_fps(port, clients, seconds)
        r[f"mjpeg{clients}"] = (min(fps), statistics.median(fps))
        r[f"mjpeg{clients}_lat"] = (pct(lats, 50), pct(lats, 99))


def start_node(tmp: Path) -> tuple[subprocess.Popen, str]:
    """A real `camfabric node` with CAMS synthetic W x H cameras at FPS (drawing and encoding
    each frame): the capture node sharing the host, as on a Pi. Returns it and its endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp / "node-beside.toml"
    cams = "".join(f'[[node.cameras]]\nid = {i}\nname = "cam{i}"\nresolution = [{W}, {H}]\nfps = {FPS}\n'
                   for i in range(CAMS))
    config.write_text(f'[node]\nname = "bench"\npublish = "{endpoint}"\n{cams}')
    proc = subprocess.Popen([sys.executable, "-m", "camfabric.cli", "node", "--config", str(config),
                             "--log-level", "WARNING"], cwd=REPO)
    return proc, endpoint


def node_cpu_per_frame(seconds: float, tmp: Path) -> dict:
    """CPU of a real `camfabric node` with three synthetic 1080p/30 cameras, one JPEG subscriber."""
    proc, endpoint = start_node(tmp)
    try:
        with protocol.Subscriber(endpoint, cameras=range(CAMS)) as sub:
            first = {cam: sub.latest(cam, timeout=20).seq for cam in range(CAMS)}
            time.sleep(1)
            ps = psutil.Process(proc.pid)
            start_cpu = sum(ps.cpu_times()[:2])
            start = {cam: sub.latest(cam, timeout=5).seq for cam in range(CAMS)}
            time.sleep(seconds)
            cpu = sum(ps.cpu_times()[:2]) - start_cpu
            end = {cam: sub.latest(cam, timeout=5).seq for cam in range(CAMS)}
        frames = sum(end[c] - start[c] for c in range(CAMS))
        del first
        return {"cpu_ms_per_frame": cpu / max(frames, 1) * 1000, "fps_total": frames / seconds,
                "cpu_cores": cpu / seconds}
    finally:
        proc.terminate()
        proc.wait(10)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def render(results: list[dict], node: dict, seconds: float, rounds: int, stolen: float) -> str:
    base, tuned = results[0], results[1]
    lines = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on: {machine()}",
        f"Source: {CAMS} cameras, {W}x{H}, {FPS} fps, pre-encoded JPEG (encode excluded). All servers "
        f"run at once on the same fabric; {rounds} interleaved rounds of {seconds:g} s each for /latest "
        f"(latency pooled, req/s median), then {seconds:g} s per MJPEG client count. "
        f"The hypervisor took {stolen:.0%} of the CPU time during the run (steal).",
        "",
        "| server | /latest p50 / p99 ms | MJPEG p50 / p99 ms, 1 / 50 clients "
        "| fps per client, 1 / 10 / 50 clients (min, median) | /latest req/s (median) "
        "| req/s ratio to the plain / TCP_NODELAY baseline, per round |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        fps = " / ".join(f"{r[f'mjpeg{n}'][0]:.1f}, {r[f'mjpeg{n}'][1]:.1f}" for n in (1, 10, 50))
        ratios = " / ".join(", ".join(f"{a / b:.2f}" for a, b in zip(r["rps"], ref["rps"], strict=True))
                            for ref in (base, tuned))
        (m1p50, m1p99), (m50p50, m50p99) = r["mjpeg1_lat"], r["mjpeg50_lat"]
        lines.append(
            f"| {r['name']} | {pct(r['latest'], 50):.1f} / {pct(r['latest'], 99):.1f} | "
            f"{m1p50:.1f} / {m1p99:.1f}, {m50p50:.1f} / {m50p99:.1f} | {fps} | "
            f"{statistics.median(r['rps']):.0f} ({r['rps_tool']}) | {ratios} |")
    lines += ["", f"Capture node, three synthetic {W}x{H} cameras at {FPS} fps with one JPEG subscriber "
              f"(draw + encode): {node['cpu_ms_per_frame']:.1f} ms CPU per frame, "
              f"{node['cpu_cores']:.2f} cores for {node['fps_total']:.1f} frames/s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200],
                        help="MJPEG client counts of the fan-out run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="gateway worker counts, one gateway each")
    parser.add_argument("--node", action="store_true",
                        help="serve a real capture node on this host (synthetic cameras, drawn "
                             "and encoded) instead of pre-encoded frames")
    parser.add_argument("--pinning", action="store_true",
                        help="run each gateway twice: every worker pinned to one CPU, and not")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds of the fan-out run (each server, each count)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="also run the older /latest, 1/10/50-client and node comparison")
    parser.add_argument("--abuse", action="store_true",
                        help="only the abuse run: /latest with and without idle sockets, a "
                             "slowloris and slow readers, against a 1-worker gateway")
    add_report_options(parser)
    args = parser.parse_args()

    ready, stop = mp.Event(), mp.Event()
    node_dir = tempfile.TemporaryDirectory()
    if args.node:
        node_proc, endpoint = start_node(Path(node_dir.name))
        driver: Any = node_proc
    else:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        driver = mp.Process(target=drive, args=(endpoint, ready, stop), daemon=True)
        driver.start()
        ready.wait(10)
    try:
        return run(args, endpoint, stop, driver)
    finally:
        if args.node:
            driver.terminate()
            driver.wait(10)
        node_dir.cleanup()


def run(args: argparse.Namespace, endpoint: str, stop: Any, driver: Any) -> int:
    if args.abuse:
        return main_abuse(args, endpoint, stop, driver)
    acc: dict[str, dict] = {}
    rows: list[tuple[str, dict]] = []
    throughput: dict[str, list[float]] = {}
    steal_start = stolen_share()
    max_streams = min(1000, max(*args.clients, 50 if args.rounds else 0) + 8)  # + the older run's 50
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        starters = [("baseline ThreadingHTTPServer", lambda p: start_baseline(p, endpoint))]
        if args.rounds:
            starters.append(("baseline with TCP_NODELAY",
                             lambda p: start_baseline(p, endpoint, nodelay=True)))
        pins: list[bool | None] = [True, False] if args.pinning else [None]
        starters += [(f"camfabric gateway, {w} worker{'s' if w > 1 else ''}"
                      + ("" if pin is None else ", pinned" if pin else ", not pinned"),
                      lambda p, w=w, pin=pin: start_gateway(p, endpoint, w, tmp, max_streams, pin))
                     for w in args.workers for pin in pins]
        ports = {name: free_port() for name, _ in starters}
        procs = {name: start(ports[name]) for name, start in starters}
        try:
            for port in ports.values():
                wait_http(port)
            for clients in args.clients:
                measured: dict[str, list[dict]] = {}
                for i in range(args.repeat):
                    for name, port in ports.items():
                        if name == "baseline with TCP_NODELAY":
                            continue
                        print(f"  round {i + 1}/{args.repeat}, {name}: {clients} MJPEG clients "
                              "+ /latest …", file=sys.stderr)
                        measured.setdefault(name, []).append(
                            fanout(port, procs[name].pid, clients, args.seconds))
                rows += [(name, merge_rounds(results)) for name, results in measured.items()]
            if args.pinning:
                for i in range(args.repeat):
                    for name, port in ports.items():
                        print(f"  round {i + 1}/{args.repeat}, {name}: /latest at saturation …",
                              file=sys.stderr)
                        throughput.setdefault(name, []).append(latest_throughput(port, args.seconds))
            for i in range(args.rounds):
                print(f"round {i + 1}/{args.rounds} of /latest …", file=sys.stderr)
                measure_round(ports, args.seconds, acc)
            if args.rounds:
                for name, port in ports.items():
                    measure_streams(name, port, args.seconds, acc[name])
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(10)
        stop.set()
        if not args.node:
            driver.join(5)
        node = None
        if args.rounds:
            print("measuring the capture node …", file=sys.stderr)
            node = node_cpu_per_frame(args.seconds, tmp)
    steal_end = stolen_share()
    stolen = (steal_end[0] - steal_start[0]) / max(1.0, steal_end[1] - steal_start[1])
    source = ("a real capture node on the same host drawing and encoding synthetic frames"
              if args.node else "pre-encoded JPEG")
    report = render_fanout(rows, args.seconds, stolen, source)
    if throughput:
        report += ("\n\n`/latest/0` at saturation, no streams (4 client processes asking as fast "
                   "as they are answered), requests per second in each round:\n\n"
                   "| server | req/s per round | median |\n|---|---|---|\n")
        report += "\n".join(f"| {name} | {', '.join(f'{x:.0f}' for x in xs)} | "
                             f"{statistics.median(xs):.0f} |" for name, xs in throughput.items())
    publish(args, report, "e2e-fanout", "MJPEG fan-out against the seed design (`benchmarks/e2e.py`)")
    if args.rounds:
        older = render(list(acc.values()), node, args.seconds, args.rounds, stolen)
        print(older)
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write("\n" + older + "\n")
        if not args.no_write:
            write_report(older)
    return 0


def main_abuse(args: argparse.Namespace, endpoint: str, stop: Any, driver: Any) -> int:
    with tempfile.TemporaryDirectory() as tmpdir:
        port = free_port()
        proc = start_gateway(port, endpoint, 1, Path(tmpdir))
        try:
            wait_http(port)
            rows = abuse(port, args.seconds)
        finally:
            proc.terminate()
            proc.wait(10)
    stop.set()
    if not args.node:
        driver.join(5)
    report = render_abuse("camfabric gateway, 1 worker (default settings)", rows, args.seconds)
    publish(args, report, "e2e-abuse", "/latest under HTTP abuse (`benchmarks/e2e.py --abuse`)")
    return 0


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """`--out` and `--no-write`, which `publish` reads."""
    parser.add_argument("--out", type=Path, help="write the report to this file as well")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")


def publish(args: argparse.Namespace, report: str, section: str, title: str) -> None:
    """Print the report, write it to --out, and into its docs/benchmarks.md section."""
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
    if not args.no_write:
        write_section(section, f"## {title}\n\n{report}")


def write_report(report: str) -> None:
    write_section("e2e", f"## End to end (`benchmarks/e2e.py`)\n\n{report}")


if __name__ == "__main__":
    sys.exit(main())
