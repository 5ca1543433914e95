"""Serving the gateway: Waitress tuned for MJPEG and abuse, in one process or several on one port.

Waitress is built, tuned and stopped in waitress_seam.py, the one module that knows its
insides: `threads` = max_streams + spares (config), because every MJPEG stream's request thread
waits for its stream to end while the fan-out (mjpeg.py) writes its parts, and the stream cap
(`StreamSlots`) keeps streams from ever taking the spares, so /latest, /snap and /status
always find a thread. Before upgrading Waitress, run tests/gateway/test_waitress_seam.py.

Workers and CPUs (`plan_workers`). `workers = 0` (the default) runs one serving process per CPU
this process may use (its affinity mask, which also reflects a container's cpuset), minus one
when a capture node shares the host — `node_on_host`, by default true when any `subscribe`
endpoint is local — so that the node's capture and encoding keep a CPU. Each worker has its own
fabric subscriber, and the stream cap counts the streams of all of them (one count per worker in
shared memory; a worker that dies, even by SIGKILL, gives its streams' slots back at once).

Pinning (`pin_cpus`, default on where the process may use two CPUs or more): a pinned worker
keeps all its threads on one CPU, where the request threads, Waitress's loop, the fan-out and
the subscriber hand the GIL over with plain context switches instead of cross-CPU wake-ups.
Measured with benchmarks/e2e.py on a 2-core VM with a real capture node beside the gateway
(drawing and encoding 3 × 1080p30, the case of a Pi): pinned, one worker answered 1082 /latest
requests per second at saturation against 624 floating, and alongside 50 MJPEG clients its
/latest p99 was 21 ms against 131 ms; without a node it was as good or better too. So it pins
by default, with or without a node beside it; `pin_cpus = false` lets it float.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
from typing import Any

import zmq

from ..runtime.errors import CamfabricError
from ..runtime.process import setup_logging, stop_event
from . import metrics
from .app import Cors, build_app
from .cache import FrameCache
from .config import GatewayConfig
from .mjpeg import StreamSlots, shared_counts
from .waitress_seam import HttpServer

log = logging.getLogger(__name__)

BACKLOG = 1024
# Every request passes from Waitress's loop thread (read, parse) to a request thread (answer)
# and back. A thread that wants the GIL while another runs Python waits up to the switch
# interval (5 ms by default) before asking for it: with a few busy clients the loop thread sat
# in that wait after each `recv`, and one worker answered /latest at half the rate it does with
# 0.2 ms (benchmarks/latest_rps.py). Set in the processes that serve, not by the library.
GIL_SWITCH_INTERVAL_S = 0.0002
RESPAWN_INTERVAL_S = 1.0
# A worker that exits this soon after starting, this many times in a row, is not restarted:
# the gateway stops with an error instead of looping (e.g. a port or key it cannot use).
QUICK_EXIT_S = 5.0
QUICK_EXITS_ALLOWED = 3


def pin_to_one_cpu(index: int = 0) -> int | None:
    """Keep every thread of this process on one of the CPUs it may use, so that the threads
    sharing its GIL hand over on one CPU; returns that CPU, or None where the system has no
    CPU affinity or this process may use only one CPU anyway.

    Worker `index` takes the `index`-th CPU counted from the last one (round robin): the first
    CPU usually handles most interrupts (network, USB cameras). Call it before the gateway
    starts its threads; threads already running are moved as well.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0), reverse=True)
    if len(allowed) < 2:
        return None
    cpu = allowed[index % len(allowed)]
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError as exc:  # a thread that has just ended, or a sandbox that refuses it
            log.debug("cannot keep thread %d on CPU %d: %s", tid, cpu, exc)
    return cpu


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def plan_workers(config: GatewayConfig, cpus: int | None = None) -> tuple[int, bool]:
    """(serving processes, whether to pin each to one CPU) for `config` on a host where this
    process may use `cpus` CPUs (default: counted). See the module docstring for the rule."""
    cpus = usable_cpus() if cpus is None else cpus
    node = config.shares_host
    workers = config.workers or max(1, cpus - (1 if node else 0))
    pin = config.pin_cpus if config.pin_cpus is not None else cpus >= 2
    return workers, pin


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class Gateway:
    """One serving process's worth of gateway: FrameCache, Falcon app and Waitress.

        with Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,))) as gw:
            requests.get(gw.url + "latest/0")
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        sock: socket.socket | None = None,
        context: zmq.Context | None = None,
        stream_counts: Any | None = None,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.sock = sock
        self.context = context
        self.stopping = threading.Event()
        self.slots = StreamSlots(config.max_streams, stream_counts, worker)
        self.cache = FrameCache(config.subscribe, heartbeat_timeout_s=config.heartbeat_timeout_s,
                                context=context, curve=config.curve_clients,
                                tracker=config.tracker, services=config.services,
                                owners=config.camera_owners, max_cameras=config.max_cameras,
                                idle_s=config.idle_s)
        self.app, self.quick = build_app(self.cache, config, slots=self.slots, stopping=self.stopping)
        self.server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return url_of(self.server.socket)

    @property
    def port(self) -> int:
        return self.server.socket.getsockname()[1]

    def start(self) -> Gateway:
        """Subscribe to the fabric and start serving HTTP on a background thread."""
        sock = self.sock or bind_socket(self.config.host, self.config.port)
        self.cache.start()
        try:
            self.server = HttpServer(self.app, sock, self.config.request_threads, Cors.expose,
                                     quick=self.quick)
        except Exception:
            self.cache.close()
            raise
        self._thread = threading.Thread(target=self.server.run, name="camfabric-gateway-http",
                                        daemon=True)
        self._thread.start()
        log.info("gateway serving %s (subscribed to %s)", self.url, ", ".join(self.config.subscribe))
        return self

    def stop(self, timeout: float = 1.5) -> None:
        """End every stream, stop Waitress and the subscriber; returns within about `timeout` s."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.cache.close()  # streams waiting for a frame wake up and end
        if self.server is None:
            return
        deadline = time.monotonic() + timeout
        self.server.stop(timeout)
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _worker_main(config: GatewayConfig, sock: socket.socket, counts: Any, index: int,
                 log_level: str, pin: bool) -> None:
    """A worker process: serve on the inherited socket until SIGTERM/SIGINT or the parent dies."""
    setup_logging(log_level)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    cpu = pin_to_one_cpu(index) if pin else None
    stop = stop_event()
    parent = os.getppid()
    gateway = Gateway(config, sock=sock, stream_counts=counts, worker=index).start()
    log.debug("worker %d (pid %d) serving on CPU %s", index, os.getpid(), cpu)
    while not stop.wait(0.5):
        if os.getppid() != parent:
            log.warning("worker %d: the gateway's main process is gone; stopping", index)
            break
    gateway.stop()


class WorkerPool:
    """`workers` processes serving one listening socket; a worker that dies is restarted."""

    def __init__(self, config: GatewayConfig, sock: socket.socket, log_level: str = "INFO",
                 pin: bool = False) -> None:
        self.config = config
        self.sock = sock
        self.log_level = log_level
        self.pin = pin
        self.mp = multiprocessing.get_context("spawn")
        self.stream_counts = shared_counts(config.workers)  # one cell per worker (mjpeg.py)
        self.processes: list[Any] = [None] * config.workers
        self._last_spawn = [0.0] * config.workers
        self._quick_exits = [0] * config.workers
        self.metrics_dir: str | None = None

    def _spawn(self, index: int) -> None:
        process = self.mp.Process(
            target=_worker_main, name=f"camfabric-gateway-worker-{index}",
            args=(self.config, self.sock, self.stream_counts, index, self.log_level, self.pin),
            daemon=True)
        process.start()
        self.processes[index] = process
        self._last_spawn[index] = time.monotonic()

    def start(self) -> WorkerPool:
        self.metrics_dir = metrics.share_between_workers()  # /metrics counts every worker
        for index in range(self.config.workers):
            self._spawn(index)
        return self

    def watch(self) -> None:
        """Restart workers that exited (at most once a second each); raise CamfabricError when
        one keeps exiting right after it starts."""
        for index, process in enumerate(self.processes):
            if process is None or process.is_alive():
                continue
            # Its streams' connections died with it: their slots are free again at once.
            self.stream_counts[index] = 0
            now = time.monotonic()
            if now - self._last_spawn[index] < RESPAWN_INTERVAL_S:
                continue
            quick = process.exitcode != 0 and now - self._last_spawn[index] < QUICK_EXIT_S
            self._quick_exits[index] = self._quick_exits[index] + 1 if quick else 0
            if self._quick_exits[index] >= QUICK_EXITS_ALLOWED:
                raise CamfabricError(f"gateway worker {index} exited {QUICK_EXITS_ALLOWED} times in a "
                                     f"row right after starting (status {process.exitcode}); "
                                     "see its log above")
            log.error("gateway worker %d exited with status %s; restarting it", index, process.exitcode)
            if self.metrics_dir is not None:
                metrics.worker_exited(self.metrics_dir, process.pid)
            self._spawn(index)

    def stop(self, timeout: float = 1.5) -> None:
        for process in self.processes:
            if process is not None and process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    log.warning("gateway worker pid %d did not stop in time; killing it", process.pid)
                    process.kill()
                    process.join(0.2)
        if self.metrics_dir is not None:
            metrics.stop_sharing(self.metrics_dir)
            self.metrics_dir = None


def serve(config: GatewayConfig, stop: threading.Event, log_level: str = "INFO",
          on_ready: Any = None) -> None:
    """Run the gateway until `stop` is set: in this process, or as `workers` processes."""
    try:
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        raise CamfabricError(f"gateway cannot listen on {config.host}:{config.port}: "
                             f"{exc.strerror or exc}") from exc
    url = url_of(sock)
    workers, pin = plan_workers(config)
    config = dataclasses.replace(config, workers=workers)
    log.info("gateway: %d worker%s, %s (%d CPUs usable; a capture node on this host: %s)",
             workers, "s" if workers > 1 else "", "each pinned to one CPU" if pin else "not pinned",
             usable_cpus(), "yes" if config.shares_host else "no")
    if workers == 1:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        if pin:
            pin_to_one_cpu()
        gateway = Gateway(config, sock=sock).start()
        if on_ready is not None:
            on_ready(url)
        try:
            stop.wait()
        finally:
            gateway.stop()
        return
    pool = WorkerPool(config, sock, log_level, pin).start()
    if on_ready is not None:
        on_ready(url)
    try:
        while not stop.wait(0.5):
            pool.watch()
    finally:
        pool.stop()
        sock.close()
