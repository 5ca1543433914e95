"""Every route of the HTTP API, driven in-process with falcon.testing against a real fabric."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import falcon.testing
import numpy as np
import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from camfabric.gateway.app import create_app
from camfabric.gateway.config import GatewayConfig
from camfabric.protocol import Scan, Status, World, decode_jpeg, topics

from ..conftest import URL, Output
from .support import RawHttp, announce, deliver, jpeg_of, read_part_by_length, registry, settle, wait_until
from .test_fabric import SECOND, FakeClock, start_node_process

IMAGE_ROUTES = ["/latest/0", "/snapshot.jpg", "/?action=snapshot", "/?action=snapshot&cam=0"]


def assert_json_error(result, status: int) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) >= {"title", "description"}
    assert "Traceback" not in result.text and "<html" not in result.text.lower()
    return body


def assert_image_headers(result) -> None:
    assert result.headers["access-control-allow-origin"] == "*"
    assert result.headers["cache-control"] == "no-cache"


def test_cameras_lists_the_registry_keyed_by_id_string(client, node, cache):
    assert client.simulate_get("/cameras").json == {}
    announce(node, cache, 0)
    announce(node, cache, 2)
    body = client.simulate_get("/cameras").json
    assert list(body) == ["0", "2"]
    assert body["2"] == registry(2)


@pytest.mark.parametrize("path", ["/latest/0", "/snapshot.jpg", "/?action=snapshot"])
def test_before_the_first_frame_latest_is_503_with_retry_after(client, node, cache, path):
    announce(node, cache, 0)
    result = client.simulate_get(path)
    assert_json_error(result, 503)
    assert int(result.headers["retry-after"]) >= 1


@pytest.mark.parametrize("path", IMAGE_ROUTES)
def test_latest_serves_the_cached_jpeg_with_its_age(client, node, cache, path):
    deliver(node, cache, 0, value=200)
    extra = "cacheBust=123&bypassCache=true"
    result = client.simulate_get(path + ("&" if "?" in path else "?") + extra)
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/jpeg"
    assert_image_headers(result)
    age = int(result.headers["x-frame-age-ms"])
    assert 0 <= age < 2000
    assert abs(int(decode_jpeg(result.content).mean()) - 200) <= 2


def test_frame_age_grows_on_the_receivers_clock(client, node, cache):
    deliver(node, cache, 0)
    first = int(client.simulate_get("/latest/0").headers["x-frame-age-ms"])
    time.sleep(0.15)
    second = int(client.simulate_get("/latest/0").headers["x-frame-age-ms"])
    assert second - first >= 140


def test_frame_age_ignores_the_publishers_clock_offset(client, node, cache):
    # A node whose clock is an hour behind: age must still be small, not an hour.
    announce(node, cache, 0)
    hour = 3600 * 10**9
    sent = node.frame(0, captured_ns=time.time_ns() - hour)
    wait_until(lambda: (f := cache.latest(0)) is not None and f.seq == sent.seq)
    age = int(client.simulate_get("/latest/0").headers["x-frame-age-ms"])
    assert age > 3_000_000  # the frame was published an hour after capture by the node's clock
    # …and the same frame published at once reads as fresh:
    sent = node.frame(0)
    wait_until(lambda: (f := cache.latest(0)) is not None and f.seq == sent.seq)
    assert int(client.simulate_get("/latest/0").headers["x-frame-age-ms"]) < 2000


@pytest.mark.parametrize("path", ["/latest/7", "/snap/7", "/cam/7", "/frame/7", "/?action=snapshot&cam=7",
                                  "/?action=stream&cam=7"])
def test_unknown_camera_is_404_json(client, node, cache, path):
    deliver(node, cache, 0)
    body = assert_json_error(client.simulate_get(path), 404)
    assert "7" in body["description"] and "0" in body["description"]


@pytest.mark.parametrize("path", ["/latest/x", "/snap/1.5", "/cam/-1", "/frame/abc", "/latest/%201",
                                  "/?action=snapshot&cam=one", "/?action=stream&cam=zero"])
def test_non_integer_camera_id_is_400_json(client, path):
    assert_json_error(client.simulate_get(path), 400)


@pytest.mark.parametrize("fmt", ["png", "RAW", "bgr", "jpeg,raw"])
def test_frame_with_another_format_is_400(client, node, cache, fmt):
    deliver(node, cache, 0)
    body = assert_json_error(client.simulate_get("/frame/0", params={"format": fmt}), 400)
    assert "jpeg or raw" in body["description"]


def test_unknown_action_is_400(client):
    assert_json_error(client.simulate_get("/", params={"action": "record"}), 400)


def test_unknown_route_is_404_json_not_html(client):
    assert_json_error(client.simulate_get("/nope", headers={"Accept": "text/html"}), 404)


def _publish_while(node, cam, stop: threading.Event, period: float = 0.02) -> threading.Thread:
    def run():
        value = 0
        while not stop.wait(period):
            value = (value + 7) % 256
            node.frame(cam, value)
            node.meta(cam)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextmanager
def publishing(node, cam: int = 0, period: float = 0.066) -> Iterator[None]:
    """Camera `cam` publishing a frame and a heartbeat every `period` s while the block runs."""
    stop = threading.Event()
    thread = _publish_while(node, cam, stop, period)
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("path", ["/snap/0", "/frame/0", "/frame/0?format=jpeg"])
def test_snap_returns_a_frame_captured_after_the_request(client, node, cache, path):
    stale = deliver(node, cache, 0, value=10)
    stop = threading.Event()
    thread = _publish_while(node, 0, stop)
    try:
        before = time.time_ns()
        result = client.simulate_get(path)
    finally:
        stop.set()
        thread.join()
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/jpeg"
    assert_image_headers(result)
    stamp = float(result.headers["x-timestamp"])
    assert stamp * 1e9 > before and stamp * 1e9 > stale.t_capture_ns


def test_snap_without_a_fresh_frame_is_503_after_the_timeout(client, node, cache):
    deliver(node, cache, 0)
    started = time.monotonic()
    assert_json_error(client.simulate_get("/snap/0"), 503)
    assert 0.45 <= time.monotonic() - started < 1.5  # snap_timeout_s = 0.5 in the fixture


def test_frame_raw_is_bgr_bytes_with_shape_headers(client, node, cache):
    deliver(node, cache, 0)
    stop = threading.Event()
    thread = _publish_while(node, 0, stop)
    try:
        result = client.simulate_get("/frame/0", params={"format": "raw", "timestamp": "1"})
    finally:
        stop.set()
        thread.join()
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/octet-stream"
    assert_image_headers(result)
    h, w = int(result.headers["x-frame-height"]), int(result.headers["x-frame-width"])
    assert (w, h) == (64, 48)
    assert result.headers["x-frame-channels"] == "3" and result.headers["x-frame-dtype"] == "uint8"
    image = np.frombuffer(result.content, dtype=np.uint8).reshape(h, w, 3)
    assert image.std() < 3  # a flat grey frame, decoded


def test_status_reports_each_camera(client, node, cache):
    deliver(node, cache, 0)
    body = client.simulate_get("/status").json
    entry = body["0"]
    assert entry["connected"] is True
    assert (entry["device_id"], entry["width"], entry["height"], entry["fps"]) == (0, 64, 48, 15.0)
    assert entry["health"]["connected"] is True
    assert entry["health"]["gateway"]["frames_received"] >= 1


def test_status_places_each_services_camera_state_in_health(client, node, cache, publisher):
    deliver(node, cache, 0)
    state = {"cameras": {"0": {"last_upload": 12.5, "ok": True}, "9": {"ok": False}}, "running": True}
    publisher.publish(Status(service="prusa_connect", state=state))
    wait_until(lambda: "prusa_connect" in client.simulate_get("/status").json["0"]["health"])
    body = client.simulate_get("/status").json
    shown = body["0"]["health"]["prusa_connect"]
    assert {k: shown[k] for k in ("last_upload", "ok", "reporting")} == {
        "last_upload": 12.5, "ok": True, "reporting": True}
    assert 0 <= shown["status_age_s"] < 5
    assert "9" not in body  # a service's state does not invent cameras


def test_world_and_scan_are_empty_and_valid_without_publishers(client):
    world = client.simulate_get("/world")
    assert world.status_code == 200
    assert world.json["objects"] == [] and world.json["updated"] is None
    scan = client.simulate_get("/scan")
    assert scan.status_code == 200 and scan.json == {}


def test_world_serves_the_trackers_model_with_its_age(client, publisher, cache):
    model = {"objects": [{"id": "cube-1", "label": "red cube", "position_mm": {"x": 1, "y": 2, "z": 3},
                          "confidence": 0.9, "camera": 0, "first_seen": 1.0, "last_seen": 2.0,
                          "observations": 3, "stale": False, "pixel": {"0": [10, 20]}}],
             "updated": time.time() - 5.0, "frame": "workspace"}
    publisher.wait_for_subscriber(topics.world())
    publisher.publish(World(model=model, source="tracker"))
    body = wait_until(lambda: (b := client.simulate_get("/world").json)["objects"] and b)
    assert body["objects"] == model["objects"] and body["frame"] == "workspace"
    assert 4.9 <= body["age_s"] < 7.0  # five seconds old when published, on the tracker's clock


def test_scan_serves_every_nodes_report(client, publisher):
    publisher.wait_for_subscriber(b"scan/node-a/")
    publisher.publish(Scan(node="node-a", report={"devices": ["/dev/video0"], "ok": True}))
    publisher.publish(Scan(node="node-b", report={"devices": []}))
    body = wait_until(lambda: len(b := client.simulate_get("/scan").json) == 2 and b)
    assert body == {"node-a": {"devices": ["/dev/video0"], "ok": True}, "node-b": {"devices": []}}


def test_malformed_messages_do_not_disturb_serving(client, node, cache, publisher):
    deliver(node, cache, 0, value=50)
    for parts in ([b"frame/0/jpeg", b"\x93not msgpack", b"xx"],
                  [b"meta/0/", json.dumps({"v": 1}).encode()],
                  [b"frame/0/jpeg", b"\x81\xa1v\x01", jpeg_of(1)[:-2]],
                  [b"world", b"\x81\xa1v\x07"]):
        publisher.publish_parts(parts, cache=False)
    wait_until(lambda: cache.subscriber.stats.malformed >= 3, what="malformed messages counted")
    deliver(node, cache, 0, value=150)
    result = client.simulate_get("/latest/0")
    assert result.status_code == 200
    assert abs(int(decode_jpeg(result.content).mean()) - 150) <= 2
    assert client.simulate_get("/world").json["objects"] == []


def test_dashboard_is_served_at_the_root(client):
    result = client.simulate_get("/")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert "/static/dashboard.js" in result.text
    script = client.simulate_get("/static/dashboard.js")
    assert script.status_code == 200 and "/latest/" in script.text and "/world" in script.text
    assert_json_error(client.simulate_get("/static/..%2Fapp.py"), 404)


def test_off_loopback_only_allowed_networks_are_answered(cache):
    app = create_app(cache, GatewayConfig(host="0.0.0.0"))
    import falcon.testing
    client = falcon.testing.TestClient(app)
    for _ in range(2):  # a client asking again gets the same answer
        assert client.simulate_get("/cameras", remote_addr="192.168.1.20").status_code == 200
        assert client.simulate_get("/cameras", remote_addr="127.0.0.1").status_code == 200
        body = assert_json_error(client.simulate_get("/cameras", remote_addr="8.8.8.8"), 403)
        assert "allow_from" in body["description"]
    assert_json_error(client.simulate_get("/latest/0", remote_addr="2001:db8::1"), 403)
    narrow = falcon.testing.TestClient(create_app(cache, GatewayConfig(host="0.0.0.0",
                                                                       allow_from=("10.1.0.0/16",))))
    assert narrow.simulate_get("/cameras", remote_addr="10.1.2.3").status_code == 200
    assert narrow.simulate_get("/cameras", remote_addr="192.168.1.20").status_code == 403


# -- HTTP as curl, browsers and other origins use it ------------------------------------------

# Every GET route, with what it needs to answer 200 once camera 0 has a frame (snap-like
# routes need a frame captured after the request: `_publish_while` provides them).
GET_ROUTES = ["/", "/cameras", "/status", "/world", "/scan", "/metrics", "/latest/0", "/snap/0",
              "/frame/0", "/frame/0?format=raw", "/snapshot.jpg", "/?action=snapshot",
              "/static/dashboard.js", "/favicon.ico", "/cam/0", "/stream.mjpg", "/?action=stream"]
STREAM_ROUTES = {"/cam/0", "/stream.mjpg", "/?action=stream"}


def exposed(result) -> set[str]:
    return {h.strip().lower() for h in result.headers["access-control-expose-headers"].split(",")}


def assert_cors(result) -> None:
    assert result.headers["access-control-allow-origin"] == "*"
    sent = {name.lower() for name in result.headers if name.lower().startswith("x-")}
    assert sent <= exposed(result), sent - exposed(result)


@pytest.fixture
def live(node, cache):
    """Camera 0 with a frame, kept publishing (15 frames a second) for the test's length."""
    deliver(node, cache, 0)
    with publishing(node):
        yield


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_every_get_route_with_its_headers_and_no_body(client, live, cache, path):
    head = client.simulate_head(path)
    assert head.status_code == 200, head.text
    assert head.content == b""
    assert_cors(head)
    if path in STREAM_ROUTES:  # the stream's headers, without opening a stream
        assert head.headers["content-type"].startswith("multipart/x-mixed-replace")
        return
    get = client.simulate_get(path)
    assert get.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    if path in {"/latest/0", "/snapshot.jpg", "/?action=snapshot", "/static/dashboard.js", "/"}:
        assert int(head.headers["content-length"]) > 0
    if path == "/static/dashboard.js":
        assert int(head.headers["content-length"]) == len(get.content)


@pytest.mark.parametrize("path", GET_ROUTES + ["/latest/7", "/nope"])
def test_preflight_options_on_every_route_allows_a_custom_header(client, path):
    result = client.simulate_options(path, headers={
        "Origin": "http://dashboard.example:3000", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-requested-with, authorization"})
    assert result.headers["access-control-allow-origin"] == "*"
    if path == "/nope":
        assert_json_error(result, 404)
        return
    assert result.status_code == 200
    assert "GET" in result.headers["access-control-allow-methods"]
    assert result.headers["access-control-allow-headers"] == "x-requested-with, authorization"


def test_cors_on_images_json_and_every_kind_of_error(client, live, cache):
    image = client.simulate_get("/latest/0", headers={"Origin": "http://other.example"})
    assert_cors(image)
    assert {"x-frame-age-ms", "x-timestamp"} <= exposed(image)
    raw = client.simulate_get("/frame/0?format=raw")
    assert_cors(raw)
    assert {"x-frame-width", "x-frame-height", "x-frame-channels", "x-frame-dtype"} <= exposed(raw)
    for path, status in (("/cameras", 200), ("/status", 200), ("/latest/7", 404), ("/latest/x", 400),
                         ("/nope", 404), ("/frame/0?format=png", 400)):
        result = client.simulate_get(path)
        assert result.status_code == status
        assert_cors(result)
    assert_cors(client.simulate_post("/cameras"))  # 405, JSON
    assert_json_error(client.simulate_post("/cameras"), 405)


def test_a_5000_digit_camera_id_is_a_short_400(client, node, cache, caplog):
    deliver(node, cache, 0)
    huge = "9" * 5000
    for path in (f"/latest/{huge}", f"/snap/{huge}", f"/cam/{huge}", f"/frame/{huge}",
                 f"/snapshot.jpg?cam={huge}", f"/?action=stream&cam={huge}"):
        result = client.simulate_get(path)
        assert_json_error(result, 400)
        assert len(result.content) < 300 and huge[:50] not in result.text
        assert_cors(result)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("path", ["/latest/0/", "/cameras/", "/status/", "/snapshot.jpg/", "/snap/0/",
                                  "/world/", "/metrics/"])
def test_a_trailing_slash_is_accepted(client, live, cache, path):
    assert client.simulate_get(path).status_code == 200


def _grey(result) -> int:
    assert result.status_code == 200, result.text
    return int(decode_jpeg(result.content).mean())


def test_cam_query_picks_the_camera_on_the_seed_routes(client, node, cache):
    deliver(node, cache, 0, value=40)
    deliver(node, cache, 2, value=210)
    assert abs(_grey(client.simulate_get("/snapshot.jpg?cam=2")) - 210) <= 2
    assert abs(_grey(client.simulate_get("/snapshot.jpg")) - 40) <= 2
    assert abs(_grey(client.simulate_get("/?action=snapshot&cam=2")) - 210) <= 2
    assert_json_error(client.simulate_get("/snapshot.jpg?cam=7"), 404)
    assert_json_error(client.simulate_get("/stream.mjpg?cam=7"), 404)


@pytest.mark.parametrize("path", ["/stream.mjpg?action=snapshot", "/cam/2?action=snapshot",
                                  "/stream.mjpg?cam=2&action=snapshot"])
def test_action_snapshot_on_a_stream_route_answers_a_snapshot(client, node, cache, path):
    deliver(node, cache, 0, value=40)
    deliver(node, cache, 2, value=210)
    result = client.simulate_get(path)
    assert result.headers["content-type"] == "image/jpeg"
    assert abs(_grey(result) - (40 if path == "/stream.mjpg?action=snapshot" else 210)) <= 2


@pytest.mark.parametrize("query", ["format=raw&format=jpeg", "cam=0&cam=2", "action=snapshot&action=stream"])
def test_a_repeated_query_parameter_is_400(client, live, cache, query):
    path = "/frame/0" if query.startswith("format") else "/"
    body = assert_json_error(client.simulate_get(path, query_string=query), 400)
    assert query.split("=")[0] in body["description"]


def _ints(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _ints(item)
    elif isinstance(value, list):
        for item in value:
            yield from _ints(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield value


def test_json_times_are_float_seconds_never_integers_beyond_2_53(client, node, cache):
    announce(node, cache, 0)
    captured = time.time_ns()
    wait_until(lambda: node.meta(0, last_capture_ns=captured) or
               "last_capture_s" in client.simulate_get("/status").json["0"]["health"])
    health = client.simulate_get("/status").json["0"]["health"]
    assert health["last_capture_s"] == pytest.approx(captured / 1e9)
    assert "last_capture_ns" not in health
    for route in ("/status", "/cameras", "/world", "/scan"):
        assert all(abs(n) <= 2**53 for n in _ints(client.simulate_get(route).json)), route


# -- a dead camera is never served as live -------------------------------------------------------

SNAPSHOT_ROUTES = ["/snapshot.jpg", "/?action=snapshot", "/snap/0", "/frame/0",
                   "/stream.mjpg?action=snapshot"]


@pytest.fixture
def clocked(make_cache, node):
    """A cache on a clock the test moves by hand (no watchdog), and a client of its app."""
    clock = FakeClock()
    cache = make_cache(node.endpoint, clock=clock, watchdog=False)
    return cache, falcon.testing.TestClient(create_app(cache, GatewayConfig(snap_timeout_s=0.3))), clock


def assert_not_live(result, cam: int, *words: str) -> dict:
    body = assert_json_error(result, 503)
    assert int(result.headers["retry-after"]) >= 1
    assert_cors(result)
    assert body["camera"] == cam and f"camera {cam}" in body["description"]
    for word in words:
        assert word in body["description"], body
    return body


@pytest.mark.parametrize("path", SNAPSHOT_ROUTES)
def test_a_frame_older_than_the_bound_is_503_naming_the_last_error(node, clocked, path):
    cache, client, clock = clocked
    deliver(node, cache, 0)
    settle(cache)
    clock.now += int(4.5 * SECOND)
    node.meta(0, last_error="read timeout on /dev/video0")  # the node is alive, its camera not
    wait_until(lambda: cache.view(0).last_error == "read timeout on /dev/video0",
               what="the heartbeat with the error")
    if "snap/" not in path and "frame/" not in path:  # 4.5 s: still within the 5 s bound
        assert client.simulate_get(path).status_code == 200
    clock.now += 1 * SECOND
    body = assert_not_live(client.simulate_get(path), 0, "read timeout on /dev/video0")
    assert body["last_error"] == "read timeout on /dev/video0"
    assert client.simulate_get("/latest/0").status_code == 200  # connected: the cached frame, aged
    age = int(client.simulate_get("/latest/0").headers["x-frame-age-ms"])
    assert age >= 5500


def test_a_disconnected_camera_is_503_on_latest_and_snapshots_and_has_fps_0(node, clocked):
    cache, client, clock = clocked
    deliver(node, cache, 0)
    settle(cache)
    assert client.simulate_get("/status").json["0"]["fps"] == 15.0
    clock.now += int(3.1 * SECOND)  # no heartbeat for longer than heartbeat_timeout_s
    for path in ["/latest/0", *SNAPSHOT_ROUTES]:
        started = time.monotonic()
        assert_not_live(client.simulate_get(path), 0, "disconnected", "node-a")
        assert time.monotonic() - started < 0.25  # at once, no waiting on a dead camera
    status = client.simulate_get("/status").json["0"]
    assert status["connected"] is False and status["fps"] == 0


def test_a_camera_its_node_reports_down_is_not_served(node, clocked):
    cache, client, clock = clocked
    deliver(node, cache, 0)
    node.meta(0, connected=False, last_error="device unplugged")
    wait_until(lambda: not cache.view(0).connected, what="the node reporting the camera down")
    assert_not_live(client.simulate_get("/snapshot.jpg"), 0, "device unplugged")
    assert client.simulate_get("/status").json["0"]["fps"] == 0


def test_a_heartbeat_older_than_the_newest_frame_does_not_call_the_camera_down(node, clocked):
    # The node builds a heartbeat, captures its first frame, then sends the heartbeat: it says
    # "not connected" about a camera whose newer frame is already here.
    cache, client, clock = clocked
    sent = deliver(node, cache, 0)
    node.meta(0, connected=False, seq=sent.seq - 1, last_error=None)
    wait_until(lambda: client.simulate_get("/status").json["0"]["health"].get("seq") == sent.seq - 1,
               what="the late heartbeat")
    assert client.simulate_get("/latest/0").status_code == 200
    node.meta(0, connected=False, seq=sent.seq, last_error="device unplugged")
    wait_until(lambda: not cache.view(0).connected, what="the heartbeat that knows the frame")
    assert_not_live(client.simulate_get("/latest/0"), 0, "device unplugged")


@pytest.mark.timeout(30)
def test_a_killed_node_turns_the_snapshot_routes_to_503_within_6_s(ipc_endpoint, make_gateway):
    gw = make_gateway(ipc_endpoint)
    process = start_node_process(ipc_endpoint)
    try:
        wait_until(lambda: requests.get(gw.url + "snapshot.jpg", timeout=5).status_code == 200,
                   timeout=10, what="the node serving")
        process.kill()  # SIGKILL: no goodbye, the heartbeat just stops
        process.wait(5)
        killed = time.monotonic()

        def all_503() -> bool:
            return all(requests.get(gw.url + p.lstrip("/"), timeout=5).status_code == 503
                       for p in SNAPSHOT_ROUTES)

        wait_until(all_503, timeout=6.0, what="every snapshot route answering 503")
        assert time.monotonic() - killed <= 6.0
        for path in ["/latest/0", *SNAPSHOT_ROUTES]:
            result = requests.get(gw.url + path.lstrip("/"), timeout=5)
            assert result.status_code == 503 and int(result.headers["Retry-After"]) >= 1
            body = result.json()
            assert body["camera"] == 0 and "disconnected" in body["description"]
            assert body["last_error"]
        status = requests.get(gw.url + "status", timeout=5).json()["0"]
        assert status["connected"] is False and status["fps"] == 0
    finally:
        process.kill()
        process.wait(5)


# -- through a real Waitress server -------------------------------------------------------------

def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is on a fresh socket; the status, headers and body that come back."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", [
    b"GET /latest/\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /cameras HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /cameras HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
])
def test_the_servers_own_errors_are_json_with_cors(make_gateway, ipc_endpoint, request_bytes):
    gw = make_gateway(ipc_endpoint)  # no node there: only the server's own answers matter
    status, headers, body = raw_request(gw.url, request_bytes + b"GET / HTTP/1.1\r\n")
    assert 400 <= status < 500
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    parsed = json.loads(body)
    assert set(parsed) == {"title", "description"} and len(body) < 400


@pytest.mark.parametrize("path", ["/stream.mjpg?cam=2", "/?action=stream&cam=2", "/cam/2"])
def test_cam_query_picks_the_stream_of_that_camera(make_gateway, node, path):
    gw = make_gateway(node.endpoint)
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(0.05):
            for cam, value in ((0, 40), (2, 210)):
                node.meta(cam)
                node.frame(cam, value)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        wait_until(lambda: requests.get(gw.url + "latest/2", timeout=5).status_code == 200,
                   timeout=10, what="a frame of camera 2")
        conn = RawHttp(gw.url, path)
        try:
            assert conn.status == 200
            assert abs(int(decode_jpeg(read_part_by_length(conn).jpeg).mean()) - 210) <= 2
        finally:
            conn.close()
    finally:
        stop.set()
        thread.join()


def test_expect_100_continue_without_a_body_is_answered_at_once(make_gateway, ipc_endpoint):
    gw = make_gateway(ipc_endpoint)
    started = time.monotonic()
    status, headers, body = raw_request(gw.url, b"GET /cameras HTTP/1.1\r\nHost: x\r\n"
                                                b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body) == {}
    assert time.monotonic() - started < 2.0


def test_curl_and_wget_see_head_like_get_on_a_real_server(make_gateway, node):
    gw = make_gateway(node.endpoint)
    with publishing(node, 0):
        wait_until(lambda: requests.get(gw.url + "snapshot.jpg", timeout=5).status_code == 200,
                   timeout=10, what="a snapshot")
        for path in ("snapshot.jpg", "cameras", "metrics", "?action=stream", "cam/0"):
            head = requests.head(gw.url + path, timeout=5)
            assert head.status_code == 200, path
            assert head.content == b"" and head.headers["Access-Control-Allow-Origin"] == "*"
        assert int(requests.head(gw.url + "snapshot.jpg", timeout=5).headers["Content-Length"]) > 100
    assert gw.slots.in_use == 0  # HEAD of a stream holds no stream slot
    huge = "9" * 5000
    result = requests.get(gw.url + "latest/" + huge, timeout=5)
    assert result.status_code == 400 and len(result.content) < 300
    assert result.headers["Access-Control-Allow-Origin"] == "*"


# -- /metrics --------------------------------------------------------------------------------

def scrape(get) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics answer, parsed by prometheus-client's own parser."""
    samples = {}
    for family in text_string_to_metric_families(get("/metrics")):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_scrape_parses_and_frames_received_rises(client, node, cache, publisher):
    deliver(node, cache, 0)
    state = {"cameras": {"0": {"state": "ok", "uploads": 4, "last_error": None}}}
    publisher.publish(Status(service="prusa_connect", state=state))
    publisher.publish(Status(service="tracker", state={"cameras": {"0": {
        "detections": 5, "last_error": "Gemini answered 429"}}}))
    wait_until(lambda: {"prusa_connect", "tracker"} <= set(
        client.simulate_get("/status").json["0"]["health"]), what="both services' states")

    def get(path):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert result.headers["content-type"].startswith("text/plain; version=")
        return result.text

    cam0 = (("camera", "0"),)
    first = scrape(get)
    with publishing(node, 0, period=0.02):
        wait_until(lambda: scrape(get)[("camfabric_frames_received_total", cam0)]
                   > first[("camfabric_frames_received_total", cam0)], what="the counter rising")
    wait_until(lambda: node.meta(0, errors=2, encodes=40, retries=1) or
               client.simulate_get("/status").json["0"]["health"].get("encodes") == 40)
    second = scrape(get)
    assert second[("camfabric_camera_connected", cam0)] == 1
    assert second[("camfabric_camera_fps", cam0)] == 15.0
    assert 0 <= second[("camfabric_frame_age_seconds", cam0)] < 5
    assert second[("camfabric_node_errors_total", cam0)] == 2
    assert second[("camfabric_node_encodes_total", cam0)] == 40
    assert second[("camfabric_node_retries_total", cam0)] == 1
    assert second[("camfabric_service_state", (("camera", "0"), ("service", "uploader"),
                                               ("state", "ok")))] == 1
    assert second[("camfabric_uploader_uploads_total", cam0)] == 4
    assert second[("camfabric_service_state", (("camera", "0"), ("service", "tracker"),
                                               ("state", "error")))] == 1
    assert second[("camfabric_tracker_detections_total", cam0)] == 5
    assert second[("camfabric_service_reporting", (("service", "tracker"),))] == 1
    assert second[("camfabric_http_requests_total", (("route", "/status"), ("status", "200")))] >= 1
    assert all(name.startswith("camfabric_") for name, _ in second if not name.startswith(("python_",
                                                                                          "process_")))


def test_metrics_count_streams_and_errors(make_gateway, node):
    gw = make_gateway(node.endpoint)
    with publishing(node, 0):
        wait_until(lambda: requests.get(gw.url + "latest/0", timeout=5).status_code == 200,
                   timeout=10, what="a frame")
        assert requests.get(gw.url + "latest/x", timeout=5).status_code == 400
        with requests.get(gw.url + "cam/0", stream=True, timeout=5) as stream:
            reader = stream.iter_content(4096)
            wait_until(lambda: next(reader) is None or scrape(
                lambda p: requests.get(gw.url + p.lstrip("/"), timeout=5).text).get(
                ("camfabric_mjpeg_parts_total", (("camera", "0"),)), 0) >= 3, timeout=10,
                what="three parts counted")
            samples = scrape(lambda p: requests.get(gw.url + p.lstrip("/"), timeout=5).text)
            assert samples[("camfabric_mjpeg_clients", (("camera", "0"),))] == 1
    assert samples[("camfabric_http_requests_total", (("route", "/latest/{cam_id}"), ("status", "400")))] == 1
    assert ("camfabric_frames_skipped_total", (("camera", "0"),)) in samples
    wait_until(lambda: scrape(lambda p: requests.get(gw.url + p.lstrip("/"), timeout=5).text)[
        ("camfabric_mjpeg_clients", (("camera", "0"),))] == 0, timeout=5, what="the stream closed")


@pytest.mark.timeout(60)
def test_metrics_count_the_requests_of_every_worker(tmp_path, node):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{node.endpoint}"]\nworkers = 2\n')
    log = tmp_path / "gateway.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "camfabric.cli", "gateway", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        url = Output(proc.stdout).wait_for(f"camfabric gateway: ({URL})").group(1)

        def get(path: str) -> str:
            answer = requests.get(url + path.lstrip("/"), timeout=10)
            assert answer.status_code < 500, f"{path}: {answer.text}; the gateway's log:\n" + \
                log.read_text()[-3000:]
            return answer.text

        def both_workers_up() -> bool:
            try:
                return scrape(get).get(("camfabric_gateway_workers", ()), 0) == 2
            except requests.RequestException:  # not listening yet, or a worker still starting
                return False

        wait_until(both_workers_up, timeout=30, what="two workers serving")
        # A worker that is just starting creates its file empty and sizes it a moment later:
        # a scrape answered meanwhile by another worker still succeeds (it was a 500).
        a_worker = next(child for child in psutil.Process(proc.pid).children()
                        if "spawn_main" in " ".join(child.cmdline()))
        shared = Path(a_worker.environ()["PROMETHEUS_MULTIPROC_DIR"])
        (shared / "counter_4000000.db").touch()
        (shared / "gauge_max_4000000.db").touch()
        assert scrape(get)[("camfabric_gateway_workers", ())] == 2
        before = scrape(get).get(("camfabric_http_requests_total", (("route", "/cameras"),
                                                                    ("status", "200"))), 0)
        sent = 60
        with ThreadPoolExecutor(6) as pool:  # new connections, taken by whichever worker is free
            codes = list(pool.map(lambda _: requests.get(url + "cameras", timeout=10).status_code,
                                  range(sent)))
        assert codes == [200] * sent
        after = scrape(get)
        counted = after[("camfabric_http_requests_total", (("route", "/cameras"), ("status", "200")))]
        assert counted - before == sent  # whichever worker answered the scrape, all were counted
        assert after[("camfabric_gateway_workers", ())] == 2

        # The fabric's counters never step back from one scrape to the next, whichever worker
        # answers each — also after a worker died and its replacement started counting at 0.
        with publishing(node, 0, period=0.05):
            received = ("camfabric_frames_received_total", (("camera", "0"),))
            # Frames flow only while a client wants the camera (subscriptions on demand).
            wait_until(lambda: get("/latest/0") is not None and scrape(get).get(received, 0) > 20,
                       timeout=15, what="frames counted")
            def worker_pids() -> set[int]:
                pids = set()
                for child in psutil.Process(proc.pid).children():
                    try:
                        alive = child.status() != psutil.STATUS_ZOMBIE
                        if alive and "spawn_main" in " ".join(child.cmdline()):
                            pids.add(child.pid)
                    except psutil.NoSuchProcess:  # reaped while we looked
                        pass
                return pids

            # Every worker dies at once: their replacements start counting at 0, and the count
            # a scrape showed before is still the least any later scrape shows.
            killed = worker_pids()
            seen = scrape(get)[received]
            for pid in killed:
                psutil.Process(pid).kill()
            wait_until(lambda: len(worker_pids() - killed) == 2 and both_workers_up(), timeout=30,
                       what="both workers replaced")
            assert scrape(get)[received] >= seen, "the frame counter stepped back after the workers died"

            def timed_scrape(_) -> tuple[float, float, float]:
                get("/latest/0")  # keeps camera 0 wanted by whichever worker answers
                started = time.monotonic()
                value = scrape(get)[received]
                return started, time.monotonic(), value

            with ThreadPoolExecutor(4) as pool:  # scrapes side by side: either worker may answer
                scrapes = list(pool.map(timed_scrape, range(60)))
            # And the count goes on. The killed worker's view is held (the largest is shown, so
            # nothing steps back) until a live worker's passes it, which takes that many frames.
            held = max(s[2] for s in scrapes)
            wait_until(lambda: timed_scrape(None)[2] > held, timeout=15, what="frames counted on")
        back = [(a[2], b[2]) for a in scrapes for b in scrapes if a[1] < b[0] and b[2] < a[2]]
        assert not back, f"a later scrape saw fewer frames than an earlier one: {back[:5]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_dashboard_needs_nothing_but_the_gateway(client):
    page = client.simulate_get("/").text
    script = client.simulate_get("/static/dashboard.js").text
    for text in (page, script):
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), "an outside resource"
    for asset in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", page):
        assert client.simulate_get(asset).status_code == 200, asset
    icon = client.simulate_get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert 'name="viewport"' in page  # laid out for a phone's width
    for route in ("/cam/", "/status", "/world", "?action=stream&cam=", "?action=snapshot&cam="):
        assert route in script, route
