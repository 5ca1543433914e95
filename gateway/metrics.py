"""`GET /metrics`: the gateway's view of the fabric as Prometheus series (prometheus-client).

Every name starts with `camfabric_`; a per-camera series carries `camera="N"`.

    fabric (read from the FrameCache at each scrape — every worker subscribes to the whole
    fabric, so whichever worker answers sees the same cameras):
      camfabric_camera_connected, camfabric_camera_fps, camfabric_frame_age_seconds,
      camfabric_frames_received_total, camfabric_camera_info{name,role,node},
      camfabric_node_{frames,encodes,errors,retries,decodes,publish_failed}_total (the node's
      own counters, from its heartbeat), camfabric_service_state{service,state},
      camfabric_service_reporting{service}, camfabric_uploader_uploads_total,
      camfabric_tracker_detections_total
    this process (counted where it happens, merged over workers):
      camfabric_http_requests_total{route,status}, camfabric_mjpeg_clients,
      camfabric_mjpeg_parts_total, camfabric_frames_skipped_total, camfabric_gateway_workers,
      camfabric_webrtc_viewers, camfabric_webrtc_bytes_sent_total (the H.264 sent to WebRTC
      viewers, payload bytes)

With several workers each one counts its own requests and streams: prometheus-client's
multiprocess mode keeps each worker's values in a file under one directory
(`PROMETHEUS_MULTIPROC_DIR`, made by `share_between_workers()` before the workers start),
and the worker that answers a scrape adds every worker's files up. The fabric's counters,
which every worker sees alike but counts a little apart, are the largest of the workers'
values instead — a dead worker's included — so that a counter never steps back between two
scrapes answered by different workers, nor when workers die and start again.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .cache import FrameCache
from .mjpeg import StreamStats
from .resources import Resource

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker copies its stream counters into the shared files between scrapes.
SYNC_INTERVAL_S = 1.0
# The node's heartbeat counters exported as camfabric_node_<name>_total.
NODE_COUNTERS = ("frames", "encodes", "errors", "retries", "decodes", "publish_failed")
# Services that publish status/ messages, by the name their series carry.
SERVICE_NAMES = {"prusa_connect": "uploader", "tracker": "tracker"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def fabric_counters(status: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, float]]]:
    """The counters in a `/status` answer: series name → (help, {camera: value})."""
    counters: dict[str, tuple[str, dict[str, float]]] = {
        "camfabric_frames_received": ("frames of the camera this gateway received", {}),
        **{f"camfabric_node_{name}": (f"the node's own count of {name.replace('_', ' ')} "
                                      "(from its heartbeat)", {}) for name in NODE_COUNTERS},
        "camfabric_uploader_uploads": ("snapshots the uploader delivered", {}),
        "camfabric_tracker_detections": ("detections the tracker made", {}),
    }
    for key, entry in status.items():
        health = entry.get("health", {})
        values = {"camfabric_frames_received": health.get("gateway", {}).get("frames_received"),
                  **{f"camfabric_node_{name}": health.get(name) for name in NODE_COUNTERS}}
        for service, name, field in (("prusa_connect", "camfabric_uploader_uploads", "uploads"),
                                     ("tracker", "camfabric_tracker_detections", "detections")):
            report = health.get(service)
            if isinstance(report, Mapping):
                values[name] = report.get(field)
        for name, value in values.items():
            if (number := _number(value)) is not None:
                counters[name][1][key] = number
    return counters


class FabricCollector:
    """The cameras, nodes and services as `/status` shows them, turned into series.

    `counters=False` leaves the counters out: with several workers they come from the shared
    files instead (see `SharedFabricCounters`)."""

    def __init__(self, cache: FrameCache, counters: bool = True) -> None:
        self.cache = cache
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        status = self.cache.status()
        registry = self.cache.registry()
        cam = ["camera"]
        connected = GaugeMetricFamily("camfabric_camera_connected",
                                      "1 while its node is heard from and its camera is up", labels=cam)
        fps = GaugeMetricFamily("camfabric_camera_fps",
                                "frames per second the camera delivers (0 when disconnected)", labels=cam)
        age = GaugeMetricFamily("camfabric_frame_age_seconds",
                                "age of the camera's newest cached frame, on the gateway's clock; only "
                                "while a client watches it (frames are subscribed on demand)", labels=cam)
        watched = GaugeMetricFamily("camfabric_camera_watched",
                                    "1 while HTTP clients want the camera and its frames are subscribed",
                                    labels=cam)
        wanted = set(self.cache.wanted())
        info = GaugeMetricFamily("camfabric_camera_info", "the camera's registry entry",
                                 labels=["camera", "name", "role", "node"])
        state = GaugeMetricFamily("camfabric_service_state",
                                  "1 for the state a service reports for the camera",
                                  labels=["service", "camera", "state"])
        reporting: dict[str, bool] = {}
        for key, entry in status.items():
            labels = [key]
            health = entry.get("health", {})
            gateway = health.get("gateway", {})
            connected.add_metric(labels, 1.0 if entry.get("connected") else 0.0)
            fps.add_metric(labels, _number(entry.get("fps")) or 0.0)
            is_watched = key.isdigit() and int(key) in wanted
            watched.add_metric(labels, 1.0 if is_watched else 0.0)
            if is_watched and (age_ms := _number(gateway.get("frame_age_ms"))) is not None:
                age.add_metric(labels, age_ms / 1000)
            reg = registry.get(key, {})
            info.add_metric([key, str(reg.get("name", "")), str(reg.get("role", "")),
                             str(entry.get("node", ""))], 1.0)
            for service, short in SERVICE_NAMES.items():
                report = health.get(service)
                if not isinstance(report, Mapping):
                    continue
                reporting[short] = reporting.get(short, False) or bool(report.get("reporting"))
                reported = report.get("state") or ("error" if report.get("last_error") else "ok")
                state.add_metric([short, key, str(reported)], 1.0)
        alive = GaugeMetricFamily("camfabric_service_reporting",
                                  "1 while the service's status messages keep arriving", labels=["service"])
        for short, ok in sorted(reporting.items()):
            alive.add_metric([short], 1.0 if ok else 0.0)
        yield from (connected, fps, age, watched, info, state, alive)
        if self.counters:
            for name, (help_text, values) in fabric_counters(status).items():
                family = CounterMetricFamily(name, help_text, labels=cam)
                for key, value in values.items():
                    family.add_metric([key], value)
                yield family


def readable_files(path: str) -> list[str]:
    """The workers' files in `path` that can be read now. prometheus-client's MultiProcessCollector
    reads every file; but a worker that is starting creates its file empty and sizes it a
    moment later, and a file read in between fails the whole scrape (a 500). An empty file holds
    no series yet: leave it out until it has its size."""
    files = []
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            if os.path.getsize(name) > 0:
                files.append(name)
        except FileNotFoundError:  # a dead worker's live gauges, removed meanwhile
            pass
    return files


class SharedFabricCounters:
    """The fabric's counters with several workers: each worker keeps its own view of them in
    a shared file (a gauge, `max`), and a scrape shows the largest as a counter — so two
    scrapes answered by different workers never see a counter step back. A worker that died
    keeps its file (mode `max`, not `livemax`, which `worker_exited` would delete): its
    replacement counts from 0, and the count it had reached is shown until the live ones pass
    it."""

    def __init__(self, cache: FrameCache, path: str) -> None:
        self.cache = cache
        self.path = path
        self.gauges = {name: Gauge(name, help_text, ["camera"], registry=None,
                                   multiprocess_mode="max")
                       for name, (help_text, _) in fabric_counters({}).items()}

    def sync(self) -> None:
        for name, (_, values) in fabric_counters(self.cache.status()).items():
            for key, value in values.items():
                self.gauges[name].labels(key).set(value)

    def collect(self) -> Iterator[Metric]:
        """Every worker's series from the shared files, the fabric counters typed as counters."""
        for metric in multiprocess.MultiProcessCollector.merge(readable_files(self.path)):
            if metric.name not in self.gauges:
                yield metric
                continue
            counter = Metric(metric.name, metric.documentation, "counter")
            for sample in metric.samples:
                counter.add_sample(metric.name + "_total", sample.labels, sample.value)
            yield counter


class GatewayMetrics:
    """This process's counters plus the fabric collector; `render()` is one scrape.

    In multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set before prometheus-client was
    imported) counters live in the shared files and a scrape merges every worker's; stream
    and fabric counters are copied there once a second by a thread that ends with `stopping`.
    """

    def __init__(self, cache: FrameCache, stats: StreamStats, *,
                 stopping: threading.Event | None = None,
                 webrtc: Callable[[], dict[int, dict[str, int]]] | None = None) -> None:
        self.stats = stats
        self.webrtc = webrtc
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV)
        self.registry = CollectorRegistry()
        own = None if self.multiprocess_dir else self.registry
        self.shared: SharedFabricCounters | None = None
        if self.multiprocess_dir:
            self.shared = SharedFabricCounters(cache, self.multiprocess_dir)
            self.registry.register(self.shared)
        self.registry.register(FabricCollector(cache, counters=self.shared is None))
        cam = ["camera"]
        self.requests = Counter("camfabric_http_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=own)
        self.clients = Gauge("camfabric_mjpeg_clients", "MJPEG streams open now", cam, registry=own,
                             multiprocess_mode="livesum")
        self.parts = Counter("camfabric_mjpeg_parts", "MJPEG parts delivered", cam, registry=own)
        self.skipped = Counter("camfabric_frames_skipped",
                               "frames a slow MJPEG client never got (it was sent a newer one)",
                               cam, registry=own)
        self.workers = Gauge("camfabric_gateway_workers", "gateway processes serving",
                             registry=own, multiprocess_mode="livesum")
        self.workers.set(1)
        self.webrtc_viewers = Gauge("camfabric_webrtc_viewers", "WebRTC (WHEP) sessions open now",
                                    cam, registry=own, multiprocess_mode="livesum")
        self.webrtc_bytes = Counter("camfabric_webrtc_bytes_sent",
                                    "H.264 payload bytes sent to WebRTC viewers", cam, registry=own)
        self._webrtc_synced: dict[int, int] = {}
        self._request_children: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self._synced: dict[int, dict[str, int]] = {}
        if self.multiprocess_dir and stopping is not None:
            threading.Thread(target=self._sync_until, args=(stopping,), daemon=True,
                             name="camfabric-metrics-sync").start()

    def count_request(self, route: str, status: int) -> None:
        # A dict lookup instead of prometheus-client's labels() on every request: that took
        # about a tenth of a /latest request.
        child = self._request_children.get((route, status))
        if child is None:
            child = self._request_children[(route, status)] = self.requests.labels(route, str(status))
        child.inc()

    def sync_streams(self) -> None:
        """Bring the stream series up to the StreamStats counts."""
        with self._lock:
            for cam, counts in self.stats.snapshot().items():
                before = self._synced.get(cam, {})
                label = str(cam)
                self.clients.labels(label).set(counts["clients"])
                for counter, name in ((self.parts, "delivered"), (self.skipped, "skipped")):
                    child = counter.labels(label)  # shown from the first client on, 0 or not
                    delta = counts[name] - before.get(name, 0)
                    if delta > 0:
                        child.inc(delta)
                self._synced[cam] = dict(counts)
            for cam, counts in (self.webrtc() if self.webrtc is not None else {}).items():
                label = str(cam)
                self.webrtc_viewers.labels(label).set(counts["viewers"])
                delta = counts["bytes_sent"] - self._webrtc_synced.get(cam, 0)
                child = self.webrtc_bytes.labels(label)
                if delta > 0:
                    child.inc(delta)
                self._webrtc_synced[cam] = counts["bytes_sent"]

    def sync(self) -> None:
        """Bring this process's series up to date (in the shared files, with several workers)."""
        self.sync_streams()
        if self.shared is not None:
            self.shared.sync()

    def _sync_until(self, stopping: threading.Event) -> None:
        while not stopping.wait(SYNC_INTERVAL_S):
            try:
                self.sync()
            except Exception:  # the metrics must never take serving down; tried again next time
                log.exception("copying the counters for /metrics failed")

    def render(self) -> bytes:
        self.sync()
        return generate_latest(self.registry)


class RequestCounter:
    """Middleware counting every answer by its route template (not its path, which would make
    a series per camera id or per typo) and status."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        route = req.uri_template if resource is not None and req.uri_template else "unmatched"
        self.metrics.count_request(route, resp.status_code)


class MetricsResource(Resource):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self.metrics.render()
        resp.content_type = CONTENT_TYPE_LATEST
        resp.set_header("Cache-Control", "no-cache")


def share_between_workers() -> str:
    """Make the directory where worker processes keep their series and name it in the
    environment the workers inherit; call before starting them."""
    path = tempfile.mkdtemp(prefix="camfabric-metrics-")
    os.environ[MULTIPROCESS_ENV] = path
    return path


def worker_exited(path: str, pid: int) -> None:
    """Drop an exited worker's live gauges (its counters stay: they were counted)."""
    multiprocess.mark_process_dead(pid, path)


def stop_sharing(path: str) -> None:
    if os.environ.get(MULTIPROCESS_ENV) == path:
        del os.environ[MULTIPROCESS_ENV]
    shutil.rmtree(path, ignore_errors=True)
