"""Helpers of the gateway tests: a stand-in node publishing through a real Publisher, and
waits on what a real client would see."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from camfabric.gateway.cache import FrameCache
from camfabric.protocol import Frame, Meta, Publisher, encode_jpeg
from camfabric.sim.faults import wait_until  # noqa: F401  (the gateway tests' wait, shared)

W, H = 64, 48


def registry(cam: int, w: int = W, h: int = H) -> dict:
    return {"id": cam, "device": f"/dev/video{cam}", "name": f"Camera {cam}", "role": "overhead",
            "mount": "fixed", "resolution": [w, h], "fov_deg": 78, "description": "test camera"}


def jpeg_of(value: int, w: int = W, h: int = H) -> bytes:
    """A small JPEG whose pixels all have the grey level `value`, so a test can tell frames apart."""
    return encode_jpeg(np.full((h, w, 3), value, dtype=np.uint8), quality=90)


class FakeNode:
    """Publishes what a capture node would — heartbeats and JPEG frames — through a real Publisher."""

    def __init__(self, publisher: Publisher, name: str = "node-a") -> None:
        self.publisher = publisher
        self.name = name
        self.seq: dict[int, int] = {}

    @property
    def endpoint(self) -> str:
        return self.publisher.endpoint

    def meta(self, cam: int, **health: object) -> None:
        self.publisher.publish(Meta(cam=cam, node=self.name, registry=registry(cam),
                                    health={"connected": True, "fps": 15.0, **health}))

    def frame(self, cam: int, value: int = 128, *, captured_ns: int | None = None,
              w: int = W, h: int = H) -> Frame:
        seq = self.seq[cam] = self.seq.get(cam, -1) + 1
        frame = Frame(cam=cam, seq=seq, t_capture_ns=captured_ns or time.time_ns(), w=w, h=h,
                      encoding="jpeg", data=jpeg_of(value, w, h), node=self.name, frame_id="f")
        self.publisher.publish(frame)
        return frame


def announce(node: FakeNode, cache: FrameCache, cam: int = 0) -> None:
    """Publish `cam`'s heartbeat until the cache knows the camera, then have a client want it,
    so that the cache subscribes its frames (on demand)."""
    node.publisher.wait_for_subscriber(b"meta/0/", timeout=3.0)
    wait_until(lambda: node.meta(cam) or cam in cache.camera_ids(), what=f"camera {cam} announced")
    cache.want(cam)
    node.publisher.wait_for_subscriber(f"frame/{cam}/jpeg".encode(), timeout=3.0)


def settle(cache: FrameCache, quiet: float = 0.2, timeout: float = 3.0) -> None:
    """Wait until no message has reached the cache for `quiet` s: re-sent heartbeats still in
    flight would otherwise arrive after a test has moved its clock."""
    deadline = time.monotonic() + timeout
    last = cache.subscriber.stats.received
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cache.subscriber.stats.received
        if now == last:
            return
        last = now
    raise AssertionError(f"the fabric did not go quiet within {timeout} s")


def deliver(node: FakeNode, cache: FrameCache, cam: int = 0, value: int = 128) -> Frame:
    """Publish frames of `cam` until the cache holds one; returns that frame.

    The fabric keeps the newest message and drops on bursts (small high-water marks), so a
    test re-sends rather than trusting one message to arrive.
    """
    announce(node, cache, cam)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        sent = node.frame(cam, value)
        try:
            wait_until(lambda sent=sent: (f := cache.latest(cam)) is not None and f.seq >= sent.seq,
                       timeout=0.2)
            return sent
        except AssertionError:
            continue
    raise AssertionError(f"no frame of camera {cam} reached the cache in 3 s")


# -- HTTP clients as they are found in the field --------------------------------------------

class RawHttp:
    """A plain socket HTTP client: what an embedded MJPEG reader does, byte for byte."""

    def __init__(self, url: str, path: str, version: str = "1.0", rcvbuf: int | None = None,
                 timeout: float = 5.0) -> None:
        host, port = url.split("//")[1].rstrip("/").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.sock.sendall(f"GET {path} HTTP/{version}\r\nHost: {host}\r\n\r\n".encode())
        self.raw = b""
        self.buffer = b""
        self.chunked = False
        head = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])}
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        if self.chunked:
            self.raw, self.buffer = self.buffer, b""

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.raw += chunk

    def _fill(self) -> None:
        """Append at least one byte of body to `buffer`, undoing chunked transfer coding."""
        if not self.chunked:
            self._recv()
            self.buffer, self.raw = self.buffer + self.raw, b""
            return
        while (end := self.raw.find(b"\r\n")) < 0:
            self._recv()
        size = int(self.raw[:end], 16)
        if size == 0:
            raise EOFError("end of chunked body")
        while len(self.raw) < end + 2 + size + 2:
            self._recv()
        self.buffer += self.raw[end + 2:end + 2 + size]
        self.raw = self.raw[end + 2 + size + 2:]

    def read_until(self, marker: bytes) -> bytes:
        while (i := self.buffer.find(marker)) < 0:
            self._fill()
        data, self.buffer = self.buffer[:i], self.buffer[i + len(marker):]
        return data

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def body(self) -> bytes:
        n = int(self.headers["content-length"])
        return self.read_exactly(n)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Part:
    headers: dict[str, str]
    jpeg: bytes

    @property
    def timestamp(self) -> float:
        return float(self.headers["x-timestamp"])


def read_part_by_length(conn: RawHttp) -> Part:
    """Mainsail's way: parse the part headers, then read exactly Content-Length bytes."""
    conn.read_until(b"--frame\r\n")
    lines = conn.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return Part(headers, conn.read_exactly(int(headers["content-length"])))


def read_part_by_markers(conn: RawHttp) -> bytes:
    """MobileRaker's way: ignore all headers, cut each JPEG from FFD8 to FFD9."""
    conn.read_until(b"\xff\xd8")
    return b"\xff\xd8" + conn.read_until(b"\xff\xd9") + b"\xff\xd9"


class Feeder:
    """Publishes frames of one camera at a steady rate on a background thread."""

    def __init__(self, node: FakeNode, cam: int = 0, fps: float = 50.0, image: np.ndarray | None = None):
        self.node, self.cam, self.period = node, cam, 1.0 / fps
        self.jpeg = encode_jpeg(image) if image is not None else None
        self.shape = image.shape if image is not None else None
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.jpeg is None:
                self.node.frame(self.cam, (self.published * 9) % 256)
            else:
                h, w = self.shape[:2]
                seq = self.node.seq[self.cam] = self.node.seq.get(self.cam, -1) + 1
                self.node.publisher.publish(Frame(cam=self.cam, seq=seq, t_capture_ns=time.time_ns(),
                                                  w=w, h=h, encoding="jpeg", data=self.jpeg,
                                                  node=self.node.name))
            if self.published % 10 == 0:
                self.node.meta(self.cam)
            self.published += 1

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
