"""A host that records whatever reaches it: the far end of a redirect, or an HTTP proxy.

    with Recorder() as lan, Recorder(status=307, location=lan.url + "/steal") as redirector:
        ...  # a client sent to redirector.url must never show up in lan.requests

It answers every request with one configured status (and `Location`, for a redirect), and
keeps each request's target, headers and body. Used as an HTTP proxy (HTTP_PROXY pointing
here), it receives what a client sends through a proxy: an absolute-form request target,
`POST http://127.0.0.1:PORT/path` (RFC 9112 §3.2.2), with every header the client meant for
the origin — a secret included. It forwards nothing: a proxy that cannot reach the origin
answers 502 Bad Gateway (RFC 9110 §15.6.3).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .loopback import LoopbackFake, QuietHandler


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def carries(self, secret: str) -> bool:
        """True when `secret` appears anywhere in the request."""
        text = " ".join([self.target, *self.headers.values()])
        return secret in text or secret.encode() in self.body


class _Handler(QuietHandler):
    recorder: Recorder

    def serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.recorder.record(Seen(self.command, self.path, dict(self.headers.items()), body))
        self.send_response(self.recorder.status)
        if self.recorder.location:
            self.send_header("Location", self.recorder.location)
        self.send_header("Content-Type", "application/json")
        payload = b'{"error": {"status": "RECORDED", "message": "recorded"}}'
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Recorder(LoopbackFake):
    """Answers `status` (with `location` when given) to every request and records it."""

    handler = _Handler
    handler_attr = "recorder"
    thread_name = "fake-recorder"

    def __init__(self, status: int = 502, location: str = "") -> None:
        self.status = status
        self.location = location
        self._seen: list[Seen] = []
        self._lock = threading.Lock()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def received(self, secret: str) -> bool:
        """True when any request that reached this host carried `secret`."""
        return any(seen.carries(secret) for seen in self.requests)
