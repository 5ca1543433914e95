"""`camfabric gateway` as a user runs it: a subprocess, a config file, signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import plan_workers
from camfabric.protocol import Publisher

from ..conftest import ANY_PORT, URL
from .support import FakeNode, Feeder, wait_until


def _exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; its new parent did not reap it
    except psutil.NoSuchProcess:
        return True


def camfabric(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "camfabric.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_help_shows_an_example_config():
    result = subprocess.run([sys.executable, "-m", "camfabric.cli", "gateway", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "[gateway]" in result.stdout and "max_streams" in result.stdout
    assert "--config" in result.stdout


def test_a_bad_config_names_the_key_and_exits_2(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nmax_streams = "many"\n')
    result = subprocess.run([sys.executable, "-m", "camfabric.cli", "gateway", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "gateway.max_streams" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_the_gateway_serves_and_stops_on_sigterm(tmp_path, zmq_context, workers):
    config = tmp_path / "gateway.toml"
    with Publisher(ANY_PORT, context=zmq_context) as pub:
        config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{pub.endpoint}"]\nworkers = {workers}\n'
                          "heartbeat_timeout_s = 3.0\n")
        node = FakeNode(pub)
        proc = camfabric("gateway", "--config", str(config))
        try:
            line = proc.stdout.readline()
            url = re.search(URL, line).group(0)  # port 0: the one it got, as it says

            def served() -> bool:
                node.meta(0)
                node.frame(0)
                try:
                    return requests.get(url + "latest/0", timeout=2).status_code == 200
                except (requests.ConnectionError, requests.Timeout):
                    return False  # workers still starting

            wait_until(served, timeout=20, what="the gateway serving camera 0")
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) >= (workers if workers > 1 else 0)
            for _ in range(10):  # every worker (each its own subscriber) has the camera
                node.frame(0)
                assert requests.get(url + "latest/0", timeout=2).status_code == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert time.monotonic() - started < 2.0
            _, left = psutil.wait_procs(children, timeout=1.0)  # no worker outlives the gateway
            assert all(_exited(c) for c in left), left
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _serving_processes(proc: subprocess.Popen, workers: int) -> list[psutil.Process]:
    main = psutil.Process(proc.pid)
    if workers == 1:
        return [main]
    serving = []
    for child in main.children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                serving.append(child)
        except psutil.NoSuchProcess:  # a worker killed a moment ago, gone or not yet reaped
            continue
    return serving


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a system with CPU affinity and at least two CPUs")
@pytest.mark.parametrize(("workers", "pin"), [(1, None), (2, None), (1, False)])
def test_each_serving_process_keeps_its_threads_on_one_cpu_unless_told(tmp_path, zmq_context,
                                                                        workers, pin):
    config = tmp_path / "gateway.toml"
    pinning = "" if pin is None else f"pin_cpus = {str(pin).lower()}\n"
    with Publisher(ANY_PORT, context=zmq_context) as pub:
        config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{pub.endpoint}"]\nworkers = {workers}\n'
                          + pinning)
        node = FakeNode(pub)
        proc = camfabric("gateway", "--config", str(config))
        try:
            url = re.search(URL, proc.stdout.readline()).group(0)

            def served() -> bool:
                node.meta(0)
                node.frame(0)
                try:
                    return requests.get(url + "latest/0", timeout=2).status_code == 200
                except (requests.ConnectionError, requests.Timeout):
                    return False

            wait_until(served, timeout=20, what="the gateway serving camera 0")
            wait_until(lambda: len(_serving_processes(proc, workers)) == workers, timeout=10,
                       what="every worker started")

            def cpu_sets() -> list[set[tuple[int, ...]]]:
                """Per serving process, the sets of CPUs its threads may run on."""
                return [{tuple(sorted(os.sched_getaffinity(t.id))) for t in process.threads()}
                        for process in _serving_processes(proc, workers)]

            if pin is False:  # told to float
                time.sleep(1.0)
                allowed = tuple(sorted(os.sched_getaffinity(0)))
                assert all(s == {allowed} for s in cpu_sets()), cpu_sets()
                return
            # A worker pins itself as it starts; give the last one time to get there.
            wait_until(lambda: all(len(s) == 1 and len(min(s)) == 1 for s in cpu_sets()), timeout=10,
                       what="every thread of every serving process on one CPU")
            used = [min(s)[0] for s in cpu_sets()]
            assert len(set(used)) == workers, f"workers share CPUs: {used}"
        finally:
            proc.terminate()
            proc.wait(timeout=5)
            proc.stdout.close()
            proc.stderr.close()


def test_a_busy_port_is_one_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(f"[gateway]\nport = {port}\n")
        result = subprocess.run([sys.executable, "-m", "camfabric.cli", "gateway", "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("keys", "cpus", "expected"), [
    ({}, 2, (1, True)),                        # loopback endpoint: a node shares the host
    ({}, 16, (15, True)),
    ({}, 1, (1, False)),                       # one CPU: nothing to pin to
    ({"subscribe": ("tcp://10.0.0.5:5550",)}, 4, (4, True)),  # nodes elsewhere: every CPU
    ({"node_on_host": False}, 2, (2, True)),
    ({"node_on_host": True, "pin_cpus": False}, 4, (3, False)),
    ({"workers": 3}, 2, (3, True)),
    ({"subscribe": ("ipc:///tmp/cam",)}, 4, (3, True)),
])
def test_workers_and_pinning_follow_the_host(keys, cpus, expected):
    assert plan_workers(GatewayConfig(**keys), cpus=cpus) == expected


def _open_stream(url: str) -> tuple[int, socket.socket]:
    """GET /cam/0 on a raw socket: (the status, the open connection)."""
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"GET /cam/0 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1]), sock


def _accepted_stream(url: str) -> tuple[int, socket.socket]:
    """`_open_stream`, asked again for a while when the camera has no frame yet in the worker
    that answered (each worker subscribes on demand); a full stream cap is answered at once."""
    deadline = time.monotonic() + 5
    while True:
        status, sock = _open_stream(url)
        if status != 503 or time.monotonic() > deadline:
            return status, sock
        sock.settimeout(2)
        body = b""
        try:
            while chunk := sock.recv(4096):
                body += chunk
        except OSError:
            pass
        sock.close()
        if b"Too many streams" in body:
            return status, sock
        time.sleep(0.1)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_workers_killed_with_streams_open_leak_no_stream_slot(tmp_path, zmq_context):
    """kill -9 a worker three times with streams open: its slots come back, and ten new
    streams are all accepted (max_streams = 10 over both workers)."""
    config = tmp_path / "gateway.toml"
    with Publisher(ANY_PORT, context=zmq_context) as pub:
        config.write_text(f'[gateway]\nport = 0\nsubscribe = ["{pub.endpoint}"]\nworkers = 2\n'
                          "max_streams = 10\n")
        node = FakeNode(pub)
        proc = camfabric("gateway", "--config", str(config))
        try:
            url = proc.stdout.readline().split("gateway: ", 1)[1].split()[0]

            def workers_serving() -> bool:
                node.meta(0)
                node.frame(0)
                workers = [w for w in _serving_processes(proc, 2) if not _exited(w)]
                statuses = []
                for _ in range(6):  # both workers (each its own subscriber) have camera 0
                    try:
                        statuses.append(requests.get(url + "latest/0", timeout=2).status_code)
                    except (requests.ConnectionError, requests.Timeout):
                        return False
                return len(workers) == 2 and statuses == [200] * 6

            with Feeder(node, fps=10):
                for _ in range(3):
                    wait_until(workers_serving, timeout=30, what="both workers serving camera 0")
                    streams = [_accepted_stream(url) for _ in range(10)]
                    assert [status for status, _ in streams] == [200] * 10
                    live = [w for w in _serving_processes(proc, 2) if not _exited(w)]
                    for worker in live:  # until a stream died with one
                        os.kill(worker.pid, signal.SIGKILL)
                        time.sleep(0.5)
                        if any(_closed_by_peer(sock) for _, sock in streams):
                            break
                    for _, sock in streams:
                        sock.close()
                wait_until(workers_serving, timeout=30, what="both workers serving camera 0")
                streams = [_accepted_stream(url) for _ in range(10)]
                statuses = [status for status, _ in streams]
                for _, sock in streams:
                    sock.close()
            assert statuses == [200] * 10
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_the_stream_cap_answers_503_naming_its_key(make_gateway, node):
    gw = make_gateway(node.endpoint, max_streams=1, threads=4)
    with Feeder(node, fps=10):
        wait_until(lambda: 0 in gw.cache.camera_ids(), what="camera 0 announced")
        wait_until(lambda: requests.get(gw.url + "latest/0", timeout=2).status_code == 200,
                   what="a first frame")
        status, sock = _open_stream(gw.url)
        try:
            assert status == 200
            refused = requests.get(gw.url + "cam/0", timeout=5)
        finally:
            sock.close()
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    body = refused.json()
    assert body["config_key"] == "gateway.max_streams" and body["max_streams"] == 1
    assert "gateway.max_streams" in body["description"]
