"""`/latest` at saturation: one gateway worker against the first seed's plain `http.server`.

    .venv/bin/python benchmarks/latest_rps.py [--rounds 5] [--seconds 5] [--clients 4] [--no-write]

A real capture node runs on the same host (three synthetic 1920x1080 cameras at 30 fps, drawing
and encoding, as on a Pi); the gateway (one worker, as `camfabric gateway` runs it) and the
seed's design — `ThreadingHTTPServer` serving the cached JPEG, with TCP_NODELAY so that Nagle
and delayed ACK do not stall its two writes (benchmarks/baseline_server.py) — subscribe to it
and serve the same bytes. In each round every server in turn gets `--clients` processes asking
`GET /latest/0` on keep-alive connections as fast as they are answered (a raw-socket client
that costs a fraction of what either server spends per request, so that the servers are what
is saturated, not the clients); the rounds interleave
the servers, and the ratio gateway / seed is taken per round. Measured, not asserted; written
to docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import (  # noqa: I001
    CAMS,
    FPS,
    REPO,
    H,
    W,
    add_report_options,
    machine,
    publish,
    start_node,
    stolen_share,
    tree_cpu,
    wait_http,
)

GATEWAY = "camfabric gateway, 1 worker"
WARM_S = 1.0
SEED = "seed http.server, TCP_NODELAY"


def started(argv: list[str], prefix: str) -> tuple[subprocess.Popen, int]:
    """A server that prints `… http://127.0.0.1:PORT/` once it listens: it and its port."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if prefix not in line:
        proc.kill()
        raise SystemExit(f"{argv[2:4]} did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1].strip().rstrip("/").split("/")[0].split()[0])


REQUEST = b"GET /latest/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def hammer_latest(port: int, seconds: float, warm_s: float, out: mp.Queue) -> None:
    """As many `/latest/0` answers as one keep-alive connection gets, counted after the
    warm-up; a raw socket doing as little as it can per request (send, read the head, read
    Content-Length bytes), so that the servers and not the clients are what is saturated.
    Puts (answers, answers that were not 200)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    count = failed = 0
    buffer = b""
    start = time.monotonic() + warm_s
    end = start + seconds
    while (now := time.monotonic()) < end:
        sock.sendall(REQUEST)
        while (head_end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(262144)
            if not chunk:
                raise SystemExit("the server closed the connection")
            buffer += chunk
        head = buffer[:head_end]
        length = LENGTH.search(head)
        need = head_end + 4 + (int(length.group(1)) if length else 0)
        while len(buffer) < need:
            chunk = sock.recv(max(262144, need - len(buffer)))
            if not chunk:
                raise SystemExit("the server closed the connection")
            buffer += chunk
        buffer = buffer[need:]
        if now >= start:
            count += 1
            failed += not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    sock.close()
    out.put((count, failed))


def saturate(port: int, pid: int, seconds: float, clients: int) -> tuple[float, float]:
    """(requests per second, the server's CPU µs per request) with `clients` processes asking
    as fast as they are answered, over `seconds` after a warm-up."""
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=hammer_latest, args=(port, seconds, WARM_S, queue))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    time.sleep(WARM_S)
    cpu = tree_cpu(pid)
    time.sleep(seconds)
    cpu = tree_cpu(pid) - cpu
    answers = [queue.get(timeout=seconds + 30) for _ in procs]
    for proc in procs:
        proc.join(10)
    total = sum(count for count, _ in answers)
    if failed := sum(bad for _, bad in answers):
        raise SystemExit(f"{failed} of {total} answers were not 200")
    return total / seconds, cpu / max(total, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per server and round")
    parser.add_argument("--clients", type=int, default=4, help="client processes asking at once")
    add_report_options(parser)
    args = parser.parse_args()
    steal_start = stolen_share()
    rps: dict[str, list[float]] = {GATEWAY: [], SEED: []}
    cpu_us: dict[str, list[float]] = {GATEWAY: [], SEED: []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        node, endpoint = start_node(tmp)
        config = tmp / "gateway.toml"
        config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{endpoint}"]\nworkers = 1\n')
        procs = {}
        try:
            procs[SEED] = started([sys.executable, str(REPO / "benchmarks" / "baseline_server.py"), "0",
                                   endpoint, "nodelay"], "baseline serving")
            procs[GATEWAY] = started([sys.executable, "-m", "camfabric.cli", "gateway", "--config",
                                      str(config), "--log-level", "WARNING"], "camfabric gateway:")
            for _, port in procs.values():
                wait_http(port)
            for i in range(args.rounds):
                order = [GATEWAY, SEED] if i % 2 == 0 else [SEED, GATEWAY]
                for name in order:
                    print(f"round {i + 1}/{args.rounds}: {name} …", file=sys.stderr)
                    proc, port = procs[name]
                    rate, cost = saturate(port, proc.pid, args.seconds, args.clients)
                    rps[name].append(rate)
                    cpu_us[name].append(cost)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
            for proc, _ in procs.values():
                proc.wait(10)
            node.terminate()
            node.wait(10)
    steal_end = stolen_share()
    stolen = (steal_end[0] - steal_start[0]) / max(1.0, steal_end[1] - steal_start[1])
    ratios = [g / s for g, s in zip(rps[GATEWAY], rps[SEED], strict=True)]
    cpu_ratios = [s / g for g, s in zip(cpu_us[GATEWAY], cpu_us[SEED], strict=True)]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = (
        f"    python3 benchmarks/latest_rps.py --rounds {args.rounds} --seconds {args.seconds:g} "
        f"--clients {args.clients}\n\n"
        f"Run {now} on: {machine()}. A capture node on the same host: {CAMS} synthetic cameras, "
        f"{W}x{H}, {FPS} fps, drawing and encoding. `/latest/0` asked by {args.clients} raw-socket "
        f"client processes on keep-alive connections as fast as they are answered, {args.seconds:g} s per "
        f"server and round, the servers' order alternating. The hypervisor took "
        f"{stolen:.0%} of the CPU time (steal).\n\n"
        "| server | req/s per round | median | server CPU µs per request, per round | median |\n"
        "|---|---|---|---|---|\n"
        + "\n".join(f"| {name} | {', '.join(f'{x:.0f}' for x in xs)} | {statistics.median(xs):.0f} "
                    f"| {', '.join(f'{x:.0f}' for x in cpu_us[name])} "
                    f"| {statistics.median(cpu_us[name]):.0f} |" for name, xs in rps.items())
        + f"\n\nReq/s ratio gateway / seed per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median **{statistics.median(ratios):.2f}**. CPU per request, seed / gateway (above 1: the "
        f"gateway spends less): {', '.join(f'{r:.2f}' for r in cpu_ratios)}; median "
        f"**{statistics.median(cpu_ratios):.2f}**."
    )
    publish(args, report, "latest-rps", "`/latest` at saturation against the seed design "
                                         "(`benchmarks/latest_rps.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
