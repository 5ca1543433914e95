"""Soak: a node, a gateway with two workers and readers, with a fault every minute, for hours.

Processes (real ones, on loopback): a capture node with synthetic cameras, and the gateway with
`workers = 2`, each started by the `camfabric` command. Readers in this process: one MJPEG
stream per camera (`/cam/N`, read part by part), and one loop per camera asking `/latest/N`
every 0.2 s. Every `--fault-every-s` seconds one fault, in turn:

- node kill      SIGKILL the node, start it again after 1 s;
- worker kill    SIGKILL one gateway worker (the gateway starts another);
- reader burst   50 MJPEG streams opened at once, read for 5 s, dropped without a goodbye;
- storm          a raw ZeroMQ SUB subscribes and unsubscribes 5 000 distinct topics.

Sampled every `--sample-every-s`: RSS, open fds and threads of the node and of the gateway (its
processes together). Counted throughout: every answer by status, 5xx with their routes; every
`/latest` 200 older than the gateway's staleness bound (5 s) while its camera was live —
"stale served while live"; every MJPEG stream without a part for more than 5 s while live.
"Live" excludes the seconds a fault may rightly darken a camera: from a node kill to 10 s
after its restart, and a worker kill plus 5 s for the streams that worker served (a stream
whose connection died is reopened; its silence until then is a broken stream, not silence).

Measured, not asserted; the machine may be shared: the run says how long it ran and where.

    nice -n 10 .venv/bin/python benchmarks/soak.py --duration-s 3600 [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_cpu import machine  # noqa: E402
from report import write_section  # noqa: E402

STALE_S = 5.0  # the gateway's default stale_after_s: older than this is never "live"
SILENT_S = 5.0
NODE_GRACE_S = 10.0  # after a node restarts, its cameras may be dark this long
WORKER_GRACE_S = 5.0
BURST = 50
STORM_TOPICS = 5000

NODE_TOML = """\
[node]
name = "soak"
publish = "{endpoint}"
{cameras}
"""
CAMERA_TOML = """\
[[node.cameras]]
id = {cam}
fps = {fps}
resolution = [320, 240]
[node.cameras.source]
kind = "synthetic"
"""
GATEWAY_TOML = """\
[gateway]
port = {port}
subscribe = ["{endpoint}"]
workers = 2
max_streams = 80
threads = 120
"""


def free_port() -> int:
    # The node and gateway are separate processes restarted on the same address for hours: the
    # port must be known before they start. (Tests bind port 0 and read it back instead.)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def camfabric(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "camfabric.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                            start_new_session=True)


@dataclass
class Tally:
    """What the readers saw; every field written under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    errors_5xx: Counter = field(default_factory=Counter)  # (route kind, status)
    errors_5xx_live: int = 0
    errors_5xx_live_seen: list[str] = field(default_factory=list)  # the first few, with their body
    stale_live: list[tuple[float, int, int]] = field(default_factory=list)  # (t, cam, age ms)
    silent_live: list[tuple[float, int, float]] = field(default_factory=list)  # (t, cam, gap s)
    latest_ok: int = 0
    parts: int = 0
    max_age_ms_live: int = 0
    transport_errors: int = 0
    bursts: list[int] = field(default_factory=list)  # streams accepted of each burst's BURST


class Soak:
    def __init__(self, cameras: int, fps: float, work: Path) -> None:
        self.cameras = cameras
        self.work = work
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cams = "\n".join(CAMERA_TOML.format(cam=c, fps=fps) for c in range(cameras))
        (work / "node.toml").write_text(NODE_TOML.format(endpoint=self.endpoint, cameras=cams))
        (work / "gateway.toml").write_text(GATEWAY_TOML.format(port=self.port,
                                                                endpoint=self.endpoint))
        self.node: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.tally = Tally()
        self.stop = threading.Event()
        self.dark: list[tuple[float, float]] = []  # (from, to), monotonic: rightly dark
        self.samples: list[dict[str, float]] = []
        self.faults: list[tuple[float, str]] = []
        self.started = time.monotonic()

    # -- processes ---------------------------------------------------------------------------
    def start_node(self) -> None:
        self.node = camfabric("node", "--config", str(self.work / "node.toml"),
                              log=self.work / "node.log")

    def start(self) -> None:
        self.start_node()
        self.gateway = camfabric("gateway", "--config", str(self.work / "gateway.toml"),
                                 log=self.work / "gateway.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/latest/0", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the gateway never served a frame; see {self.work}")

    def close(self) -> None:
        self.stop.set()
        for proc in (self.gateway, self.node):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def live(self, since: float | None = None) -> bool:
        """True when no fault window overlaps [since, now] (just now, without `since`)."""
        now = time.monotonic()
        since = now if since is None else since
        return not any(start <= now and since <= end for start, end in self.dark)

    def dark_for(self, seconds: float) -> None:
        now = time.monotonic()
        self.dark.append((now, now + seconds))

    # -- readers -----------------------------------------------------------------------------
    def count(self, kind: str, answer: requests.Response) -> None:
        status = answer.status_code
        with self.tally.lock:
            self.tally.statuses[status] += 1
            if status >= 500:
                self.tally.errors_5xx[(kind, status)] += 1
                if self.live():
                    self.tally.errors_5xx_live += 1
                    if len(self.tally.errors_5xx_live_seen) < 5:
                        self.tally.errors_5xx_live_seen.append(
                            f"{self.elapsed():.0f} s {kind} {status}: {answer.text[:160]}")

    def latest_loop(self, cam: int) -> None:
        session = requests.Session()
        while not self.stop.wait(0.2):
            try:
                answer = session.get(f"{self.url}/latest/{cam}", timeout=5)
            except requests.RequestException:
                with self.tally.lock:
                    self.tally.transport_errors += 1
                continue
            self.count("latest", answer)
            if answer.status_code != 200:
                continue
            age = int(answer.headers.get("X-Frame-Age-Ms", "0"))
            with self.tally.lock:
                self.tally.latest_ok += 1
                if self.live():
                    self.tally.max_age_ms_live = max(self.tally.max_age_ms_live, age)
                    if age > STALE_S * 1000:
                        self.tally.stale_live.append((self.elapsed(), cam, age))

    def stream_loop(self, cam: int) -> None:
        while not self.stop.is_set():
            try:
                with requests.get(f"{self.url}/cam/{cam}", stream=True, timeout=10) as answer:
                    self.count("stream", answer)
                    if answer.status_code != 200:
                        self.stop.wait(1.0)
                        continue
                    last = time.monotonic()
                    for chunk in answer.iter_content(65536):
                        now = time.monotonic()
                        gap = now - last
                        if b"--frame" in chunk:
                            with self.tally.lock:
                                self.tally.parts += 1
                                if gap > SILENT_S and self.live(since=last):
                                    self.tally.silent_live.append((self.elapsed(), cam, gap))
                            last = now
                        if self.stop.is_set():
                            return
            except requests.RequestException:
                with self.tally.lock:
                    self.tally.transport_errors += 1
                self.stop.wait(0.5)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    # -- faults ------------------------------------------------------------------------------
    def kill_node(self) -> None:
        self.dark_for(1.0 + NODE_GRACE_S)
        os.killpg(self.node.pid, signal.SIGKILL)
        self.node.wait(10)
        time.sleep(1.0)
        self.start_node()

    def kill_worker(self) -> None:
        # The serving workers (not a helper process such as multiprocessing's resource tracker).
        workers = sorted(psutil.Process(self.gateway.pid).children(),
                         key=lambda p: p.num_threads(), reverse=True)
        if not workers:
            return
        self.dark_for(WORKER_GRACE_S)
        workers[0].send_signal(signal.SIGKILL)

    def burst(self) -> None:
        accepted: list[int] = []

        def reader(cam: int) -> None:
            try:
                with requests.get(f"{self.url}/cam/{cam}", stream=True, timeout=10) as answer:
                    self.count("burst", answer)
                    if answer.status_code == 200:
                        accepted.append(cam)
                    deadline = time.monotonic() + 5
                    for _ in answer.iter_content(65536):
                        if time.monotonic() > deadline:
                            break
            except requests.RequestException:
                with self.tally.lock:
                    self.tally.transport_errors += 1

        threads = [threading.Thread(target=reader, args=(i % self.cameras,), daemon=True)
                   for i in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        with self.tally.lock:
            self.tally.bursts.append(len(accepted))

    def storm(self) -> None:
        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.linger = 0
        try:
            sub.connect(self.endpoint)
            for i in range(STORM_TOPICS):
                sub.subscribe(f"storm/{i}/".encode())
            time.sleep(2)
            for i in range(STORM_TOPICS):
                sub.unsubscribe(f"storm/{i}/".encode())
            time.sleep(1)
        finally:
            sub.close(linger=0)
            context.term()

    # -- sampling ----------------------------------------------------------------------------
    def sample(self) -> None:
        row: dict[str, float] = {"t": time.monotonic() - self.started}
        for name, proc in (("node", self.node), ("gateway", self.gateway)):
            try:
                root = psutil.Process(proc.pid)
                procs = [root, *root.children(recursive=True)]
                row[f"{name}_rss_mb"] = sum(p.memory_info().rss for p in procs) / 2**20
                row[f"{name}_fds"] = sum(p.num_fds() for p in procs)
                row[f"{name}_threads"] = sum(p.num_threads() for p in procs)
            except psutil.Error:
                continue  # restarting right now
        self.samples.append(row)

    def run(self, duration_s: float, fault_every_s: float, sample_every_s: float) -> None:
        readers = [threading.Thread(target=loop, args=(cam,), daemon=True)
                   for cam in range(self.cameras) for loop in (self.latest_loop, self.stream_loop)]
        for thread in readers:
            thread.start()
        faults = [("node kill", self.kill_node), ("worker kill", self.kill_worker),
                  ("reader burst", self.burst), ("storm", self.storm)]
        end = self.started + duration_s
        next_fault = self.started + fault_every_s
        turn = 0
        while time.monotonic() < end:
            self.sample()
            if time.monotonic() >= next_fault:
                name, fault = faults[turn % len(faults)]
                self.faults.append((self.elapsed(), name))
                print(f"[{self.elapsed():7.1f} s] fault: {name}", flush=True)
                fault()
                turn += 1
                next_fault += fault_every_s
            time.sleep(sample_every_s)
        self.sample()


def slope_per_hour(samples: list[dict[str, float]], key: str, skip_s: float) -> float | None:
    """Least-squares growth of `key` per hour, leaving out the first `skip_s` (warm-up)."""
    points = [(s["t"], s[key]) for s in samples if key in s and s["t"] >= skip_s]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


def unplanned_exits(log: Path) -> list[str]:
    """Gateway workers that died of something other than the soak's own SIGKILL, from the
    gateway's log (a crash: a signal such as SIGABRT, or an exit status)."""
    if not log.exists():
        return []
    return [line.strip() for line in log.read_text(errors="replace").splitlines()
            if ("exited with status" in line and "status -9;" not in line)
            or "Assertion failed" in line]


def report(soak: Soak, ran_s: float, requested_s: float) -> str:
    tally, samples = soak.tally, soak.samples
    crashes = unplanned_exits(soak.work / "gateway.log")
    warm = min(120.0, ran_s / 4)
    rows = []
    for key, unit in (("rss_mb", "MB"), ("fds", "fds"), ("threads", "threads")):
        for name in ("gateway", "node"):
            values = [s[f"{name}_{key}"] for s in samples if f"{name}_{key}" in s]
            if not values:
                continue
            slope = slope_per_hour(samples, f"{name}_{key}", warm)
            rows.append(f"| {name} {unit} | {values[0]:.1f} | {min(values):.1f} | {max(values):.1f} "
                        f"| {values[-1]:.1f} | {'' if slope is None else f'{slope:+.1f}'} |")
    kinds = Counter(name for _, name in soak.faults)
    errors = ", ".join(f"{kind} {status}: {n}" for (kind, status), n in
                       sorted(tally.errors_5xx.items())) or "none"
    stale = tally.stale_live[:5]
    silent = tally.silent_live[:5]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""## Soak (`benchmarks/soak.py`)

{stamp}. **Ran {ran_s / 60:.1f} minutes** (asked for {requested_s / 60:.1f}; the issue asks
for an hour — read the growth figures with the length of the run in mind). A node with
{soak.cameras} synthetic 320x240 cameras and a gateway with 2 workers, as `camfabric`
processes on loopback; one MJPEG reader and one `/latest` poller (5 per second) per camera; a
fault every minute in turn: {", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))}.

| process, resource | first | min | max | last | growth per hour (fit after {warm:.0f} s) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

- answers: {dict(sorted(tally.statuses.items()))}; `/latest` 200s: {tally.latest_ok}; MJPEG
  parts: {tally.parts}; transport errors (connection dropped or refused, mostly by the faults):
  {tally.transport_errors}
- 5xx: {errors}; of them outside the fault windows (camera live): {tally.errors_5xx_live}
  {"; ".join(tally.errors_5xx_live_seen)}
- stale served while live (a `/latest` 200 older than {STALE_S:g} s): {len(tally.stale_live)}
  {stale if stale else ""}; the oldest `/latest` served while live: {tally.max_age_ms_live} ms
- streams silent > {SILENT_S:g} s while live: {len(tally.silent_live)} {silent if silent else ""}
- gateway workers that died unplanned (from its log): {len(crashes)}
  {chr(10).join("  " + line for line in crashes[:6])}
- reader bursts: streams accepted of {BURST}, burst by burst (the gateway allows 80 at once,
  {soak.cameras} of them held by the steady readers): {tally.bursts}

Machine (shared with other work while it ran; the run was `nice -n 10`):

```
{machine()}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--fault-every-s", type=float, default=60.0)
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="camfabric-soak-") as tmp:
        soak = Soak(args.cameras, args.fps, Path(tmp))
        interrupted = False
        try:
            soak.start()
            soak.run(args.duration_s, args.fault_every_s, args.sample_every_s)
        except KeyboardInterrupt:
            interrupted = True  # a shortened run still reports what it measured
        finally:
            ran_s = time.monotonic() - soak.started
            soak.close()
        text = report(soak, ran_s, args.duration_s)
        print(text)
        if interrupted:
            print("(interrupted)")
        if not args.no_write:
            write_section("soak", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
