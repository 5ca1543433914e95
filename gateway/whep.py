"""The WHEP routes: WebRTC viewers as MediaMTX serves them to Mainsail and Fluidd.

    OPTIONS /webrtc/{cam}/whep            204, ICE servers as Link headers (none by default)
    POST    /webrtc/{cam}/whep            SDP offer in, 201 + SDP answer, Location, ETag
    PATCH   /webrtc/{cam}/whep/{session}  trickled candidates (application/trickle-ice-sdpfrag,
                                          If-Match: the ETag) -> 204
    DELETE  /webrtc/{cam}/whep/{session}  -> 200, the session ends

Errors are JSON like every other answer: a bad offer or fragment 400, an unknown camera or
session 404, a stale ETag 412, a wrong Content-Type 415, and 501 saying what to install when
the optional WebRTC extra is missing (everything else works without it).

Several workers. A session lives in the process that answered its POST (its peer connection
is that process's sockets); the session id begins with that process's relay name. A PATCH or
DELETE reaching another worker is relayed to the owner over a ZeroMQ IPC socket in a directory
only this user can enter, and the owner's answer is passed back unchanged; so every request of
a session works whichever worker accepts it, and POSTs spread over the workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from typing import Any

import falcon
import zmq

from .cache import FrameCache
from .resources import camera_id
from .webrtc import WebRtcError, WebRtcPeers, available, require

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
RELAY_TIMEOUT_MS = 5000
MAX_SDP_BYTES = 32 * 1024
_OWNER = re.compile(r"^([0-9a-f]{8})-")


def relay_dir() -> str:
    """The directory the workers' relay sockets live in: private to this user."""
    path = os.path.join(tempfile.gettempdir(), f"camfabric-whep-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_uid != os.getuid():  # made by someone else to catch the relayed requests
        raise WebRtcError(500, "WebRTC relay unsafe", f"{path} belongs to another user; remove it")
    os.chmod(path, 0o700)
    return path


class SessionRelay:
    """Answers other workers' PATCH/DELETE for this process's sessions, and relays ours."""

    def __init__(self, peers: WebRtcPeers, context: zmq.Context | None = None) -> None:
        self.peers = peers
        self.context = context or zmq.Context.instance()
        self.name = secrets.token_hex(4)
        self.dir = relay_dir()
        self.endpoint = f"ipc://{os.path.join(self.dir, self.name)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()

    @property
    def prefix(self) -> str:
        return f"{self.name}-"

    def start(self) -> SessionRelay:
        self._thread = threading.Thread(target=self._serve, name="camfabric-whep-relay",
                                        daemon=True)
        self._thread.start()
        self._bound.wait(2.0)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)

    def owns(self, session: str) -> bool:
        return session.startswith(self.prefix)

    def handle(self, op: str, session: str, if_match: str | None, body: str) -> None:
        """Do `op` ("patch"/"delete") on `session` here or in the worker that owns it."""
        if self.owns(session):
            _local(self.peers, op, session, if_match, body)
            return
        owner = _OWNER.match(session)
        path = os.path.join(self.dir, owner.group(1)) if owner else ""
        if not owner or not os.path.exists(path):
            raise WebRtcError(404, "Unknown session", "no such WebRTC session (ended already?)")
        with self.context.socket(zmq.REQ) as req:
            req.linger = 0
            req.rcvtimeo = req.sndtimeo = RELAY_TIMEOUT_MS
            req.connect(f"ipc://{path}")
            try:
                req.send_json({"op": op, "session": session, "if_match": if_match, "body": body})
                answer = req.recv_json()
            except zmq.Again as exc:
                raise WebRtcError(404, "Unknown session", "the worker that held this session "
                                  "does not answer (it was restarted?)") from exc
        if answer["status"] >= 300:
            raise WebRtcError(answer["status"], answer["title"], answer["description"])

    def _serve(self) -> None:
        with self.context.socket(zmq.ROUTER) as router:
            router.linger = 0
            router.bind(self.endpoint)
            self._bound.set()
            try:
                while not self._stop.is_set():
                    if not router.poll(200):
                        continue
                    peer, empty, raw = router.recv_multipart()
                    router.send_multipart([peer, empty, json.dumps(self._answer(raw)).encode()])
            finally:
                router.unbind(self.endpoint)
                with contextlib.suppress(OSError):
                    os.unlink(self.endpoint[len("ipc://"):])

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            ask = json.loads(raw)
            _local(self.peers, str(ask["op"]), str(ask["session"]), ask.get("if_match"),
                   str(ask.get("body", "")))
        except WebRtcError as exc:
            return {"status": exc.status, "title": exc.title, "description": str(exc)}
        except Exception as exc:  # a relayed request must be answered whatever happens
            log.exception("relayed WebRTC request failed")
            return {"status": 500, "title": "Relay failed", "description": type(exc).__name__}
        return {"status": 204, "title": "", "description": ""}


def _local(peers: WebRtcPeers, op: str, session: str, if_match: str | None, body: str) -> None:
    if op == "patch":
        peers.add_candidates(session, body, if_match)
    elif op == "delete":
        peers.close_session(session)
    else:
        raise WebRtcError(400, "Bad relay request", f"unknown operation {op[:16]!r}")


class WebRtc:
    """This process's WebRTC side, started on first use (not at all without the extra)."""

    def __init__(self, cache: FrameCache, stopping: threading.Event,
                 ice_servers: tuple[str, ...] = ()) -> None:
        self.cache = cache
        self.stopping = stopping
        self.ice_servers = ice_servers
        self.peers: WebRtcPeers | None = None
        self.relay: SessionRelay | None = None
        self._lock = threading.Lock()

    def ready(self) -> tuple[WebRtcPeers, SessionRelay]:
        require()
        with self._lock:
            if self.peers is None:
                sub = self.cache.subscriber
                peers = WebRtcPeers(self.cache.endpoints, context=sub.context, curve=sub.curve,
                                    ice_servers=self.ice_servers).start()
                self.relay = SessionRelay(peers, sub.context).start()
                peers.session_prefix = self.relay.prefix
                self.peers = peers
                # The gateway stops by setting `stopping`: end every session with it.
                threading.Thread(target=self._close_when_stopping, daemon=True,
                                 name="camfabric-webrtc-stop").start()
            return self.peers, self.relay

    def _close_when_stopping(self) -> None:
        self.stopping.wait()
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.relay is not None:
                self.relay.close()
            if self.peers is not None:
                self.peers.close()

    def viewers(self) -> dict[int, dict[str, int]]:
        return self.peers.viewers() if self.peers is not None else {}


class WebRtcStatus:
    """Middleware adding each camera's WebRTC viewers and bytes sent to `/status` (this
    process's sessions: with several workers, `/metrics` adds them up)."""

    def __init__(self, webrtc: WebRtc) -> None:
        self.webrtc = webrtc

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if req.uri_template != "/status" or not req_succeeded or not isinstance(resp.media, dict):
            return
        viewers = self.webrtc.viewers()
        for cam, entry in resp.media.items():
            health = entry.get("health") if isinstance(entry, dict) else None
            if isinstance(health, dict) and str(cam).isdigit():
                counts = viewers.get(int(cam), {"viewers": 0, "bytes_sent": 0})
                health.setdefault("gateway", {})["webrtc"] = dict(counts)


def _fail(exc: WebRtcError) -> falcon.HTTPError:
    return falcon.HTTPError(falcon.code_to_http_status(exc.status), title=exc.title,
                            description=str(exc))


def _body(req: falcon.Request, expected: str) -> str:
    kind = (req.content_type or "").split(";")[0].strip().lower()
    if kind != expected:
        raise falcon.HTTPUnsupportedMediaType(
            title="Wrong Content-Type", description=f"send the body as {expected}, not {kind or 'nothing'}")
    raw = req.bounded_stream.read(MAX_SDP_BYTES + 1)
    if len(raw) > MAX_SDP_BYTES:
        raise falcon.HTTPContentTooLarge(title="Body too large",
                                         description=f"at most {MAX_SDP_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise falcon.HTTPBadRequest(title="Bad body", description="the body is not UTF-8") from exc


class WhepResource:
    """`/webrtc/{cam}/whep`: OPTIONS tells the ICE servers, POST starts a session."""

    def __init__(self, webrtc: WebRtc) -> None:
        self.webrtc = webrtc

    def on_options(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        resp.status = falcon.HTTP_204
        resp.set_header("Accept-Post", SDP)
        resp.set_header("Allow", "OPTIONS, POST")
        for url in self.webrtc.ice_servers:
            resp.append_header("Link", f'<{url}>; rel="ice-server"')

    def on_post(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
        cam = camera_id(cam_id)
        try:
            peers, _ = self.webrtc.ready()
        except WebRtcError as exc:
            raise _fail(exc) from exc
        offer = _body(req, SDP)
        self.webrtc.cache.require(cam)  # UnknownCamera -> 404, mapped once in app.py
        try:
            answer = peers.offer(cam, offer)
        except WebRtcError as exc:
            raise _fail(exc) from exc
        resp.status = falcon.HTTP_201
        resp.content_type = SDP
        resp.text = answer.sdp
        resp.set_header("ETag", answer.etag)
        resp.set_header("Location", f"/webrtc/{cam}/whep/{answer.session}")
        resp.set_header("Accept-Patch", SDPFRAG)


class WhepSessionResource:
    """`/webrtc/{cam}/whep/{session}`: PATCH adds trickled candidates, DELETE ends it."""

    def __init__(self, webrtc: WebRtc) -> None:
        self.webrtc = webrtc

    def on_options(self, req: falcon.Request, resp: falcon.Response, cam_id: str,
                   session_id: str) -> None:
        resp.status = falcon.HTTP_204
        resp.set_header("Accept-Patch", SDPFRAG)
        resp.set_header("Allow", "OPTIONS, PATCH, DELETE")

    def on_patch(self, req: falcon.Request, resp: falcon.Response, cam_id: str,
                 session_id: str) -> None:
        self._do(req, "patch", cam_id, session_id, _body(req, SDPFRAG) if available() else "")
        resp.status = falcon.HTTP_204

    def on_delete(self, req: falcon.Request, resp: falcon.Response, cam_id: str,
                  session_id: str) -> None:
        self._do(req, "delete", cam_id, session_id, "")
        resp.status = falcon.HTTP_200

    def _do(self, req: falcon.Request, op: str, cam_id: str, session_id: str, body: str) -> None:
        camera_id(cam_id)
        try:
            _, relay = self.webrtc.ready()
            relay.handle(op, session_id, req.get_header("If-Match"), body)
        except WebRtcError as exc:
            raise _fail(exc) from exc

