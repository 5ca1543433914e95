"""A fake Prusa Connect camera API: a real HTTP server on 127.0.0.1, faithful to the contract.

    with FakeConnect() as connect:
        connect.add_camera("A" * 20)
        ...  # point the uploader at connect.url
        connect.wait_for(lambda: len(connect.snapshots("A" * 20)) >= 2)

What it enforces, as Connect publishes it. Sources, cited at each rule below as:
  [API]  Prusa Connect camera API, OpenAPI v0.22.0: https://connect.prusa3d.com/docs/cameras/openapi/
  [SDK]  PrusaLink's SDK, github.com/prusa3d/Prusa-Connect-SDK-Printer (prusa/connect/printer/
         camera.py: the TriggerScheme enum, the camera's /c/info config)
  [ESP]  Prusa's ESP32 camera firmware, github.com/prusa3d/Prusa-Firmware-ESP32-Cam
         (REFRESH_INTERVAL_MIN 10, the 20-character token)
- PUT /c/snapshot and PUT /c/info need a `Token` header: exactly 20 letters and digits [ESP]
  naming a known camera (401 otherwise; 401 once `revoke(token)` was called, 403 for
  `forbid(token)`) [API], and a `Fingerprint` of 16-64 characters (400 otherwise) [API];
- the fingerprint of the first accepted *snapshot* binds the token; any other one answers
  400 "Invalid fingerprint" [API]; /c/info before that first snapshot is refused (the camera is
  registered by its first image) [SDK sends info after the first snapshot];
- one snapshot per camera per 10 s: an earlier one answers 429 [ESP REFRESH_INTERVAL_MIN 10;
  SDK's fastest scheme TEN_SEC], measured on `clock` (a test may share its own);
- a snapshot needs `Content-Type: image/jpg` (image/jpeg is accepted too), a `Content-Length`
  (411), a body of at most 16 MiB (413 Payload Too Large beyond it) that is a whole JPEG
  (SOI ... EOI, 400 otherwise) [API];
- /c/info needs a JSON object {"config": {...}} whose `name` is a string of at most 64
  characters, `trigger_scheme` one of the schemes [SDK TriggerScheme] and `resolution`
  {"width": int, "height": int} when present (400 otherwise) [API CameraConfig];
- success is 204 with no body, or — `success="200"` — 200 with a JSON body (for /c/info the
  camera echoed back), both forms the live service has been seen to use;
- error bodies are the spec's {"code", "message"} for authentication, fingerprint and rate
  errors [API error schema], and {"detail": "..."} for request validation, as the live
  service answers those.

Faults, applied before any check and consumed in order: `fail(status, times, retry_after)`,
`drop(times)` (the connection is closed without an answer), `slow(delay_s, times)` (answers
after a delay), and `outage(...)`/`end_outage()` for a fault that lasts until ended. Every
request is recorded (monotonic time, path, headers, body size and SHA-256, answer status).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.loopback import LoopbackFake, QuietHandler

MAX_BYTES = 16 * 1024 * 1024  # [API] snapshot size limit
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
MIN_SNAPSHOT_INTERVAL_S = 10.0  # [ESP] REFRESH_INTERVAL_MIN 10; [SDK] TEN_SEC is the fastest scheme
TOKEN = re.compile(r"^[A-Za-z0-9]{20}$")  # [ESP] the token Connect issues: 20 letters and digits
MAX_NAME = 64  # [API] CameraConfig.name maxLength
# [SDK] TriggerScheme; [API] CameraConfig.trigger_scheme
TRIGGER_SCHEMES = frozenset({"TEN_SEC", "THIRTY_SEC", "SIXTY_SEC", "TEN_MIN", "EACH_LAYER", "FIFTH_LAYER",
                             "GCODE", "MANUAL"})


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it."""

    time: float
    method: str
    path: str
    headers: dict[str, str]
    body_size: int
    sha256: str
    status: int  # 0 when the connection was dropped without an answer
    info: dict[str, Any] | None = None
    body: bytes = field(default=b"", repr=False)  # a snapshot's JPEG, as received

    @property
    def token(self) -> str:
        return self.headers.get("token", "")

    @property
    def fingerprint(self) -> str:
        return self.headers.get("fingerprint", "")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Fault:
    kind: str  # "status", "drop", "slow"
    remaining: int | None  # None: until end_outage()
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0
    token: str | None = None
    path: str | None = None

    def matches(self, path: str, token: str) -> bool:
        return ((self.remaining is None or self.remaining > 0)
                and (self.token is None or self.token == token)
                and (self.path is None or self.path == path))


@dataclass
class _Camera:
    fingerprint: str | None = None
    state: str = "active"  # "active", "revoked" (401), "forbidden" (403)
    last_snapshot: float | None = None  # when the last accepted snapshot arrived, on the fake's clock


@dataclass
class _State:
    cameras: dict[str, _Camera] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)


class FakeConnect(LoopbackFake):
    """The fake server; start() binds 127.0.0.1 on a free port, `url` is its base URL."""

    handler_attr = "connect"
    thread_name = "fake-prusa-connect"

    def __init__(self, success: str = "204", max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic,
                 min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S) -> None:
        if success not in ("204", "200"):
            raise ValueError("success is '204' or '200'")
        self.success = success
        self.max_bytes = max_bytes
        self.clock = clock  # seconds; a test driving the uploader's clock shares it here
        self.min_interval_s = min_interval_s
        self._state = _State()
        self._cond = threading.Condition()
        self.errors: list[BaseException] = []  # exceptions inside the fake itself: a test bug

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        self.end_outage()  # a handler waiting out a fault answers before the server goes
        super().stop()

    # -- cameras -------------------------------------------------------------------------------
    def add_camera(self, token: str, fingerprint: str | None = None) -> None:
        """A camera added with 'Add new other camera'; optionally already bound to a fingerprint."""
        with self._cond:
            self._state.cameras[token] = _Camera(fingerprint=fingerprint)

    def revoke(self, token: str) -> None:
        """The user regenerated or deleted the token: every later request answers 401."""
        with self._cond:
            self._state.cameras[token].state = "revoked"

    def forbid(self, token: str) -> None:
        """A proxy or firewall in front of Connect refuses this camera: 403 until `allow(token)`."""
        with self._cond:
            self._state.cameras[token].state = "forbidden"

    def allow(self, token: str) -> None:
        with self._cond:
            self._state.cameras[token].state = "active"

    def bound_fingerprint(self, token: str) -> str | None:
        with self._cond:
            return self._state.cameras[token].fingerprint

    # -- faults --------------------------------------------------------------------------------
    def fail(self, status: int = 503, times: int = 1, retry_after: str | float | None = None,
             token: str | None = None, path: str | None = None) -> None:
        self._add(Fault("status", times, status=status, token=token, path=path,
                        retry_after=None if retry_after is None else str(retry_after)))

    def drop(self, times: int = 1, token: str | None = None) -> None:
        self._add(Fault("drop", times, token=token))

    def slow(self, delay_s: float, times: int = 1, token: str | None = None) -> None:
        self._add(Fault("slow", times, delay_s=delay_s, token=token))

    def outage(self, status: int = 503, retry_after: str | float | None = None, kind: str = "status") -> None:
        """Every request fails (status, or kind="drop") until end_outage()."""
        self._add(Fault(kind, None, status=status,
                        retry_after=None if retry_after is None else str(retry_after)))

    def end_outage(self) -> None:
        with self._cond:
            self._state.faults = [f for f in self._state.faults if f.remaining is not None]

    def faults_left(self) -> int:
        """How many counted faults no request has met yet."""
        with self._cond:
            return sum(f.remaining or 0 for f in self._state.faults)

    def _add(self, fault: Fault) -> None:
        with self._cond:
            self._state.faults.append(fault)

    def _take_fault(self, path: str, token: str) -> Fault | None:
        with self._cond:
            for fault in self._state.faults:
                if fault.matches(path, token):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    # -- what tests read -----------------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        with self._cond:
            return list(self._state.requests)

    def snapshots(self, token: str | None = None) -> list[Recorded]:
        """Snapshots Connect accepted (2xx), optionally for one token, oldest first."""
        return [r for r in self.requests
                if r.path == "/c/snapshot" and r.ok and (token is None or r.token == token)]

    def refused(self, status: int, token: str | None = None) -> list[Recorded]:
        """Requests answered with `status` (e.g. 429), optionally for one token."""
        return [r for r in self.requests if r.status == status and (token is None or r.token == token)]

    def infos(self, token: str | None = None) -> list[Recorded]:
        return [r for r in self.requests
                if r.path == "/c/info" and r.ok and (token is None or r.token == token)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until `predicate()` holds (re-checked on every request) or the timeout ends."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def _record(self, record: Recorded) -> None:
        with self._cond:
            self._state.requests.append(record)
            self._cond.notify_all()

    # -- the contract --------------------------------------------------------------------------
    def _check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None,
                                                                           dict[str, Any] | None]:
        """(status, JSON answer, parsed info) for a request that passed the fault stage."""
        if path not in ("/c/snapshot", "/c/info"):
            return 404, {"detail": "Not found"}, None
        token = headers.get("token", "")
        fingerprint = headers.get("fingerprint", "")
        with self._cond:
            camera = self._state.cameras.get(token)
            if not token:
                return 401, _error("UNAUTHORIZED", "Missing token"), None  # [API] 401
            if not TOKEN.match(token) or camera is None or camera.state == "revoked":
                return 401, _error("UNAUTHORIZED", "Invalid token"), None  # [API] 401, [ESP] format
            if camera.state == "forbidden":
                return 403, _error("FORBIDDEN", "Forbidden"), None  # [API] 403
            if not 16 <= len(fingerprint) <= 64:  # [API] Fingerprint header: 16-64 characters
                return 400, {"detail": "Invalid fingerprint: length must be 16 to 64"}, None
            if camera.fingerprint is not None and camera.fingerprint != fingerprint:
                # [API] a token is bound to one fingerprint. The live service answers a snapshot
                # with 400 and /c/info with 403 here.
                if path == "/c/info":
                    return 403, _error("FORBIDDEN", "Forbidden"), None
                return 400, _error("INVALID_FINGERPRINT", "Invalid fingerprint"), None
            if path == "/c/info" and camera.fingerprint is None:
                # [SDK] the camera registers with its first snapshot; info comes after it.
                return 400, _error("NOT_REGISTERED", "Camera is not registered: send a snapshot first"), None
        if "content-length" not in headers:
            return 411, {"detail": "Content-Length required"}, None
        if path == "/c/snapshot":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype not in ("image/jpg", "image/jpeg"):  # [API] requestBody image/jpg
                return 400, {"detail": f"Unsupported content type {ctype!r}; expected image/jpg"}, None
            if len(body) > self.max_bytes:
                return 413, {"detail": "Payload too large"}, None
            if len(body) < 4 or body[:2] != SOI or body[-2:] != EOI:
                return 400, {"detail": "Invalid image"}, None
            with self._cond:
                now = self.clock()
                if camera.last_snapshot is not None and now - camera.last_snapshot < self.min_interval_s:
                    # [ESP] REFRESH_INTERVAL_MIN 10: one snapshot per camera per 10 s
                    return 429, _error("TOO_MANY_REQUESTS", "Too many snapshots: one per 10 s"), None
                camera.last_snapshot = now
                if camera.fingerprint is None:
                    camera.fingerprint = fingerprint  # [API] the first snapshot binds the token
            return (*self._success(), None)
        try:
            info = json.loads(body)
        except ValueError:
            return 400, {"detail": "Invalid JSON"}, None
        config = info.get("config") if isinstance(info, dict) else None
        if not isinstance(config, dict):
            return 400, {"detail": "Missing config"}, None
        if "name" in config and not isinstance(config["name"], str):
            return 400, {"detail": "config.name must be a string"}, None
        if isinstance(config.get("name"), str) and len(config["name"]) > MAX_NAME:  # [API] maxLength 64
            return 400, {"detail": f"config.name: ensure this value has at most {MAX_NAME} characters"}, None
        scheme = config.get("trigger_scheme")
        if scheme is not None and scheme not in TRIGGER_SCHEMES:  # [SDK] TriggerScheme
            return 400, {"detail": f"config.trigger_scheme: {scheme!r} is not a valid TriggerScheme"}, None
        res = config.get("resolution")
        if res is not None and not (isinstance(res, dict)
                                    and all(isinstance(res.get(k), int) for k in ("width", "height"))):
            return 400, {"detail": "config.resolution must be {width, height}"}, None
        if self.success == "204":
            return 204, None, info
        return 200, {**info, "origin": "OTHER", "registered": True}, info  # the camera, echoed

    def _success(self) -> tuple[int, dict[str, Any] | None]:
        return (204, None) if self.success == "204" else (200, {"message": "OK"})


def _error(code: str, message: str) -> dict[str, str]:
    """[API] the error body of the spec: {"code", "message"}."""
    return {"code": code, "message": message}


class _Handler(QuietHandler):
    connect: FakeConnect

    def serve(self) -> None:
        started = self.connect.clock()
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?")[0]
        token = headers.get("token", "")
        fault = self.connect._take_fault(path, token)
        info = None

        def record(status: int) -> None:
            self.connect._record(Recorded(
                time=started, method=self.command, path=path, headers=headers, body_size=len(body),
                sha256=hashlib.sha256(body).hexdigest(), status=status, info=info,
                body=body if path == "/c/snapshot" else b""))

        if fault is not None and fault.kind == "drop":
            record(0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_s)
            fault = None
        if self.command != "PUT":
            status, answer = 405, {"detail": "Method not allowed"}
        elif fault is not None:
            status, answer = fault.status, {"detail": f"Injected fault {fault.status}"}
        else:
            status, answer, info = self.connect._check(path, headers, body)
        record(status)
        payload = b"" if answer is None else json.dumps(answer).encode()
        try:
            self.send_response(status)
            if fault is not None and fault.retry_after is not None:
                self.send_header("Retry-After", fault.retry_after)
            if payload:
                self.send_header("Content-Type", "application/json")
            if status != 204:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True


FakeConnect.handler = _Handler
